"""Every tolerance of the package, and the one rule for giving them: in one place.

An element passes when ``|actual - expected| <= atol + rtol * |expected|``.
``atol`` and ``rtol`` are given together or not at all (as in
``torch.testing.assert_close``): one without the other silently changes what the
default meant.

Logits: the defaults scale with the logits, ``atol = factor * rms(expected)``;
for float32 ``rtol = 1e-4`` and ``factor = 5e-4``. The evidence, measured by
``benchmarks/tolerances.py`` and written by it to docs/tolerances.md: clean
exports of 14 timm architectures, both exporters, differ from torch by at most
~8e-5 of the logits' RMS; 1.5x errors planted in single layers move the logits
by far more.

Layers: a layer fails when its max abs diff exceeds
``atol + rms(activation) * max(rtol, growth * upstream_rel)`` (docs/layers.md).

The reproducer script of a bundle (``reproduce.py``) reads the logits
tolerances that :mod:`pytest_onnx_parity.artifacts` writes from here into its
``meta.json``; it has no defaults of its own.

This module imports nothing of the package but :mod:`.errors`.
"""
from __future__ import annotations

import math
from typing import Any

from .errors import SpecError

#: dtype of the expected logits -> (rtol, atol factor times the RMS of the expected logits)
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-7, 1e-7),
    "float32": (1e-4, 5e-4),
    "float16": (1e-2, 1e-2),
    "bfloat16": (5e-2, 5e-2),
}

#: What to change to move a logits verdict.
TOLERANCE_HINT = "--onnx-parity-atol/--onnx-parity-rtol (or atol=/rtol= given together)"

#: Per-layer relative tolerance (float32). Evidence: docs/layers.md.
LAYER_RTOL = 1e-3
#: Absolute floor of the per-layer tolerance, for layers whose activations are ~0.
LAYER_ATOL = 1e-5
#: A layer may carry up to this many times the relative error of the layers feeding it.
LAYER_GROWTH = 10.0

#: Input perturbation (relative to the batch's largest magnitude) of the "is torch
#: itself this sensitive?" probe: a model whose logits move by more than the
#: tolerance for such a change is ill-conditioned, and no verdict can blame the export.
SENSITIVITY_EPS = 1e-6

#: Float64 arbitration (see :mod:`.conditioning`): an export is blamed only when ONNX Runtime's
#: error against torch float64 is more than this many times torch float32's own error there.
ARBITRATION_FACTOR = 10.0


def check_pair(atol: Any, rtol: Any, *, where: str = "", defaults: str = "") -> tuple[float, float] | None:
    """Validate a user's tolerance pair: ``None`` when neither is given, else ``(atol, rtol)``.

    Raises :class:`SpecError` when only one is given, or when either is negative or NaN.
    ``where`` names the source (an option, a marker keyword) in the message;
    ``defaults`` says what applies when neither is given.
    """
    prefix = f"{where}: " if where else ""
    if (atol is None) != (rtol is None):
        tail = f"; without both the defaults apply ({defaults})" if defaults else (
            ": one without the other silently changes what the default meant")
        raise SpecError(f"{prefix}give atol and rtol together or not at all (got atol={atol!r}, rtol={rtol!r}){tail}")
    if atol is None:
        return None
    try:
        a, r = float(atol), float(rtol)
    except (TypeError, ValueError):
        raise SpecError(f"{prefix}tolerances must be numbers, got atol={atol!r}, rtol={rtol!r}") from None
    if not (a >= 0 and r >= 0) or math.isinf(a) or math.isinf(r):
        raise SpecError(f"{prefix}tolerances must be finite non-negative numbers, got atol={atol!r}, rtol={rtol!r}")
    return a, r


def default_logit_tolerance(dtype: str) -> tuple[float, float]:
    """``(rtol, atol factor)`` for logits of that dtype (float32's for unknown dtypes)."""
    return DEFAULT_TOLERANCES.get(dtype, DEFAULT_TOLERANCES["float32"])


def logits_tolerance(expected: Any, atol: Any = None, rtol: Any = None) -> tuple[float, float, str]:
    """``(atol, rtol, how)`` for comparing logits with ``expected`` (a numpy array).

    Given values are validated by :func:`check_pair`; the defaults come from
    :data:`DEFAULT_TOLERANCES` by dtype, atol scaled by the RMS of the finite logits.
    """
    import numpy as np

    pair = check_pair(atol, rtol)
    if pair is not None:
        return pair[0], pair[1], "given"
    dt = str(expected.dtype)
    rt, factor = default_logit_tolerance(dt)
    finite = expected[np.isfinite(expected)].astype(np.float64)
    scale = float(np.sqrt(np.mean(finite**2))) if finite.size else 0.0
    return factor * scale, rt, f"default for {dt}: {factor:g} x logit RMS {scale:.3g}"


def layer_tolerance(atol: Any = None, rtol: Any = None) -> tuple[float, float]:
    """``(atol, rtol)`` of the per-layer check: given (validated) or the layer defaults."""
    pair = check_pair(atol, rtol, defaults=f"atol={LAYER_ATOL:g}, rtol={LAYER_RTOL:g}")
    return pair if pair is not None else (LAYER_ATOL, LAYER_RTOL)
