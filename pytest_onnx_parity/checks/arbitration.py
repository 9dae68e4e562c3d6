"""Float64 arbitration, with its wording: the one place that may call a difference "inconclusive".

After a comparison failed, torch float64 on the same input is the reference: when ONNX
Runtime's difference from torch float32 is not well beyond torch float32's own error
(and, where the logits are known, torch's own sensitivity to a 1e-6 input change), float
rounding in an ill-conditioned model explains it, and no verdict can blame the export
(:mod:`.conditioning` has the probes, :data:`~..tolerances.ARBITRATION_FACTOR` the bound).
Used by the ``logits``, ``real_images`` and ``layers`` checks.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..tolerances import ARBITRATION_FACTOR
from .conditioning import float64_arbitration, torch_sensitivity

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..runtime.outputs import Segment

FIX = ("These weights make the model ill-conditioned; check it with pretrained or checkpoint weights "
       "(NAME=pretrained or NAME=/path/to/weights).")


def arbitrate(model: "torch.nn.Module", x: np.ndarray, delta: float, tolerance: float, details: dict[str, Any], *,
              expected: np.ndarray | None = None, seed: int = 0, module: str | None = None,
              inputs_note: str = "", part: "Segment | None" = None) -> str | None:
    """The "inconclusive" message when float rounding explains ``delta``, else None (the export is to blame).

    ``delta``: ONNX Runtime's max abs difference from torch float32 on ``x`` at the logits (at one output
    ``part`` of several, or at ``module``); ``expected``: torch's flat outputs on ``x``, for the sensitivity probe. The evidence goes
    into ``details`` (``float64``, and ``torch_self_sensitivity`` with ``expected``).
    """
    if not np.isfinite(delta):
        return None
    own = torch_sensitivity(model, x, expected, seed, part=part) if expected is not None else 0.0
    arb = float64_arbitration(model, x, delta, module=module, part=part)
    if expected is not None:
        details["torch_self_sensitivity"] = own
    details["float64"] = arb.to_dict()
    if delta > (ARBITRATION_FACTOR + 1.0) * max(own, arb.own):
        return None
    moved = f", and moves by {own:.3g} for an input change of 1e-6" if expected is not None else ""
    return (f"inconclusive: {inputs_note}ONNX Runtime departs from torch by {delta:.3g} (tolerance {tolerance:.3g}) at "
            f"{arb.where}, but the torch model itself is that unstable: its float32 output there differs from float64 "
            f"by {arb.own:.3g}{moved}. The export is blamed only beyond {ARBITRATION_FACTOR + 1:g}x that. {FIX}")
