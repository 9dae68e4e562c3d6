"""Can the numbers support a verdict? Probes that tell an export fault from an ill-conditioned model.

A parity check blames the export only with evidence. Three probes, used by the
``logits``, ``real_images`` and ``layers`` checks alike:

* :func:`torch_sensitivity`: how far torch alone moves its outputs for an input
  change of :data:`~.tolerances.SENSITIVITY_EPS` (cheap, one forward).
* :func:`float64_arbitration`: torch in float64 on the same input is the reference.
  If ONNX Runtime's difference from torch float32 (``delta``) is not well beyond
  torch float32's own error against float64 (``own``), float rounding explains it:
  ``delta <= (ARBITRATION_FACTOR + 1) * own`` means ONNX Runtime's error against
  float64 (at least ``delta - own``) is within ``ARBITRATION_FACTOR`` times torch's
  own, and no verdict can blame the export. Runs only after a check failed.
* :func:`first_nonfinite_module`: the first module (in execution order) whose torch
  output holds NaN or Inf, to say where a non-finite torch output comes from.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..runtime.forward import torch_forward
from ..tolerances import ARBITRATION_FACTOR, SENSITIVITY_EPS

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..runtime.outputs import Segment


def torch_sensitivity(model: "torch.nn.Module", x: np.ndarray, baseline: np.ndarray, seed: int = 0,
                      part: "Segment | None" = None) -> float:
    """Max abs change of torch's outputs (of one output ``part`` of several) when ``x`` moves by
    ``SENSITIVITY_EPS`` of its largest magnitude.

    ``baseline`` is ``torch_forward(model, x)`` (flat); the perturbation is seeded Gaussian noise.
    """
    noise = np.random.default_rng(seed + 1).standard_normal(x.shape).astype(np.float32)
    moved = torch_forward(model, x + noise * np.float32(SENSITIVITY_EPS * float(np.abs(x).max())))
    if part is not None:
        moved, baseline = part.take(moved), part.take(baseline)
    return float(np.abs(moved - baseline).max())


@dataclass(frozen=True)
class Arbitration:
    """ONNX Runtime's difference from torch float32 against torch float32's own error (float64 reference)."""

    delta: float  # max |ONNX Runtime - torch float32|
    own: float  # max |torch float32 - torch float64|
    where: str  # "logits", one output of several ("output 1 (N, 112, 14, 14)") or a module path

    @property
    def blames_export(self) -> bool:
        return self.delta > (ARBITRATION_FACTOR + 1.0) * self.own

    def sentence(self) -> str:
        ratio = self.delta / self.own if self.own > 0 else float("inf")
        if self.blames_export:
            return (f"float64 check at {self.where}: ONNX Runtime departs from torch by {self.delta:.3g}, "
                    f"{ratio:.3g}x torch float32's own error against float64 ({self.own:.3g}): the export is to blame")
        return (f"float64 check at {self.where}: ONNX Runtime departs from torch by {self.delta:.3g}, only "
                f"{ratio:.3g}x torch float32's own error against float64 ({self.own:.3g}; blame needs more than "
                f"{ARBITRATION_FACTOR + 1:g}x): float rounding in an ill-conditioned model explains it")

    def to_dict(self) -> dict[str, Any]:
        return {"where": self.where, "delta": self.delta, "torch_float32_error": self.own,
                "blames_export": self.blames_export}


def _module_output(model: "torch.nn.Module", x: Any, name: str | None) -> np.ndarray:
    """The model's outputs, flat (``name`` None; :func:`~..runtime.outputs.flatten`) or that module's first
    output, as float64 numpy."""
    import torch

    from ..runtime.outputs import flatten, output_arrays

    captured: list[Any] = []
    handle = None
    if name:
        module = dict(model.named_modules())[name]

        def hook(_mod: Any, _inp: Any, out: Any) -> None:
            if not captured:
                captured.append(out[0] if isinstance(out, (tuple, list)) else out)

        handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        if handle is not None:
            handle.remove()
    if name:
        return captured[0].detach().double().cpu().numpy()
    return flatten(output_arrays(out, double=True))


def float64_arbitration(model: "torch.nn.Module", x: np.ndarray, delta: float, *,
                        module: str | None = None, part: "Segment | None" = None) -> Arbitration:
    """Compare torch float32 with torch float64 on ``x`` at the logits (at one output ``part`` of several)
    or at ``module``.

    ``delta`` is ONNX Runtime's max abs difference from torch float32 there. The
    model is copied for the float64 run; the given model is not changed.
    """
    import copy

    import torch

    xt = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
    t32 = _module_output(model, xt, module)
    model64 = copy.deepcopy(model).double()
    try:
        t64 = _module_output(model64, xt.double(), module)
    finally:
        del model64
    if part is not None and module is None:
        t32, t64 = part.take(t32), part.take(t64)
    own = float(np.abs(t32 - t64).max()) if t32.size else 0.0
    return Arbitration(delta=float(delta), own=own, where=module or (part.label if part is not None else "logits"))


def first_nonfinite_module(model: "torch.nn.Module", x: np.ndarray) -> str | None:
    """The first module, in execution order, whose torch output holds NaN or Inf (None if none does)."""
    import torch

    found: list[str] = []

    def make(name: str) -> Any:
        def hook(_mod: Any, _inp: Any, out: Any) -> None:
            if found:
                return
            tensors = out if isinstance(out, (tuple, list)) else [out]
            for t in tensors:
                if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    found.append(name)
                    return
        return hook

    handles = [m.register_forward_hook(make(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32)))
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else None
