"""Who to blame for a divergent module: the exporter, the runtime, or a simplifier.

The module's subgraph (:class:`.isolate.ModuleCut`) is run alone on torch's inputs, by ONNX
Runtime at every optimisation level and by ONNX's reference evaluator
(``onnx.reference.ReferenceEvaluator``, a plain numpy reading of the ONNX spec), and each
result is measured against torch's output with the per-layer rule: ``max abs diff <= atol +
rtol * rms(torch output)`` (no growth term: the inputs are torch's own). :func:`decide` then
says, in this order:

``simplifier``
    an unsimplified file was given (``unsimplified=``, API only) and it passes.
``runtime``
    ONNX Runtime's levels disagree among themselves (one agrees with torch, another not, or two
    differ by more than the tolerance), or the reference evaluator agrees with torch while ONNX
    Runtime does not: the graph means what torch computes, and a kernel or an optimisation
    computes something else.
``exporter``
    the subgraph departs from torch at every level, the levels agree, and the reference
    evaluator computes what ONNX Runtime computes: the graph itself says something other than
    the torch module.
``undetermined``
    anything else, with the reason: the subgraph agrees with torch when run alone (the
    divergence needs the rest of the file), the reference evaluator cannot run it, or it
    agrees with neither side.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..axes import ORT_OPT_LEVELS
from ..tolerances import logit_rms

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from .isolate import ModuleCut

__all__ = ["Blame", "blame_cut", "decide", "measure_values", "run_levels", "run_reference"]

VERDICTS = ("exporter", "runtime", "simplifier", "undetermined")


def measure_values(expected: Mapping[str, Any], actual: Mapping[str, Any], atol: float, rtol: float) -> dict[str, Any]:
    """The worst output of ``actual`` against ``expected`` (same names): max abs diff, that over the RMS of the
    expected values, the tolerance ``atol + rtol * rms`` and whether it is met (NaN never passes)."""
    import numpy as np

    worst: dict[str, Any] = {"max_abs_diff": 0.0, "max_rel_diff": 0.0, "tolerance": atol, "passed": True}
    worst_ratio = -1.0
    for name, e in expected.items():
        e64 = np.asarray(e, dtype=np.float64)
        a64 = np.asarray(actual[name], dtype=np.float64)
        if e64.shape != a64.shape:
            return {"max_abs_diff": math.inf, "max_rel_diff": math.inf, "tolerance": atol, "passed": False,
                    "problem": f"{name}: shapes differ, expected {e64.shape}, got {a64.shape}"}
        with np.errstate(invalid="ignore"):
            diff = np.abs(a64 - e64)
        diff[e64 == a64] = 0.0  # the same infinity on both sides
        diff[~np.isfinite(diff)] = np.inf
        rms = logit_rms(e64)  # of the finite values, as every tolerance of the package
        m = float(diff.max()) if diff.size else 0.0
        tol = atol + rtol * rms
        ratio = m / tol if tol > 0 else (0.0 if m == 0 else math.inf)
        if ratio > worst_ratio:
            worst_ratio = ratio
            worst = {"max_abs_diff": m, "max_rel_diff": m / rms if rms > 0 else (0.0 if m == 0 else math.inf),
                     "tolerance": tol, "passed": bool(m <= tol)}
    return worst


def run_levels(proto: "onnx.ModelProto", feeds: Mapping[str, Any], levels: Any = None,
               settings: Any = None) -> dict[str, dict[str, Any]]:
    """The runtime of ``settings`` (Python onnxruntime on the CPU when None) on ``proto`` at each optimisation
    level (default: all of them): level -> outputs by name."""
    from ..runtime.runner import RunSettings
    from ..runtime.values import run_arrays

    base = settings or RunSettings()
    data = proto.SerializeToString()
    names = [o.name for o in proto.graph.output]
    return {level: dict(zip(names, run_arrays(data, base.at(ort_opt=level), names, dict(feeds)), strict=True))
            for level in levels or ORT_OPT_LEVELS}


def run_reference(proto: "onnx.ModelProto", feeds: Mapping[str, Any], new_ops: Any = None) -> dict[str, Any]:
    """ONNX's reference evaluator on ``proto``: outputs by name (``new_ops``: op classes replacing its own)."""
    from onnx.reference import ReferenceEvaluator

    ref = ReferenceEvaluator(proto, new_ops=new_ops)
    names = [o.name for o in proto.graph.output]
    return dict(zip(names, ref.run(names, dict(feeds)), strict=True))


@dataclass
class Blame:
    """The verdict on a divergent module and the figures behind it."""

    verdict: str
    reason: str
    levels: dict[str, dict[str, Any]]
    """Each ONNX Runtime level against torch."""
    spread: dict[str, Any]
    """The worst difference between two levels (each against the first, ``disabled``)."""
    reference: dict[str, Any]
    """The reference evaluator against torch (``vs_torch``) and against ONNX Runtime (``vs_onnxruntime``),
    or the ``error`` that kept it from running."""
    unsimplified: dict[str, Any] | None = None

    def line(self) -> str:
        """``who to blame: exporter (the module's subgraph ...)``."""
        return f"who to blame: {self.verdict} ({self.reason})"

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reason": self.reason, "line": self.line(), "levels": self.levels,
                "spread": self.spread, "reference": self.reference, "unsimplified": self.unsimplified}


def blame_cut(
    cut: "ModuleCut",
    *,
    exporter: str | None = None,
    unsimplified: Mapping[str, Any] | None = None,
    new_ops: Any = None,
    runner: Callable[..., dict[str, dict[str, Any]]] | None = None,
) -> Blame:
    """Run ``cut`` at every ONNX Runtime level and with the reference evaluator on torch's inputs; the verdict.

    ``unsimplified``: ``{"passed": bool, "how": str}`` for the file before a simplifier ran (API only);
    ``new_ops``: reference-evaluator op classes to use instead of its own; ``runner``: replaces
    :func:`run_levels` (tests).
    """
    levels_out = runner(cut.proto, cut.inputs) if runner else run_levels(cut.proto, cut.inputs, settings=cut.settings)
    atol, rtol = cut.atol, cut.rtol
    levels = {lv: measure_values(cut.outputs, out, atol, rtol) for lv, out in levels_out.items()}
    first = next(iter(levels_out))
    base = levels_out[first]  # the graph as written: no optimisation (the first level)
    spread: dict[str, Any] = {"max_abs_diff": 0.0, "passed": True, "levels": None}
    for lv, out in levels_out.items():
        s = measure_values(base, out, atol, rtol)
        if s["max_abs_diff"] > spread["max_abs_diff"]:
            spread = {**s, "levels": f"{first} and {lv}"}
    try:
        ref = run_reference(cut.proto, cut.inputs, new_ops)
    except Exception as exc:  # noqa: BLE001 - an op it lacks, a type it refuses: recorded, the verdict says so
        reference: dict[str, Any] = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
    else:
        reference = {"vs_torch": measure_values(cut.outputs, ref, atol, rtol),
                     "vs_onnxruntime": measure_values(base, ref, atol, rtol)}
    verdict, reason = decide(levels, spread, reference, unsimplified, exporter)
    return Blame(verdict, reason, levels, spread, reference, dict(unsimplified) if unsimplified else None)


def decide(
    levels: Mapping[str, Mapping[str, Any]],
    spread: Mapping[str, Any],
    reference: Mapping[str, Any],
    unsimplified: Mapping[str, Any] | None = None,
    exporter: str | None = None,
) -> tuple[str, str]:
    """``(verdict, reason)`` from the measured figures (the rule of the module docstring)."""
    failing = [lv for lv, s in levels.items() if not s["passed"]]
    worst = max((s["max_abs_diff"] for s in levels.values()), default=0.0)
    if unsimplified is not None and unsimplified.get("passed"):
        return "simplifier", (f"the unsimplified file passes ({unsimplified.get('how', 'no divergence')}) and the "
                              "simplified one does not: report it to the simplifier")
    if not failing:
        return "undetermined", ("the module's subgraph, run alone on torch's inputs, agrees with torch at every ONNX "
                                "Runtime optimisation level: the divergence needs the rest of the file (an "
                                "optimisation across the module's boundary?); rerun the whole file at "
                                "--onnx-parity-ort-opt=disabled to tell")
    if len(failing) < len(levels):
        ok = [lv for lv in levels if lv not in failing]
        return "runtime", (f"ONNX Runtime's optimisation levels disagree: {', '.join(ok)} agree(s) with torch, "
                           f"{', '.join(failing)} do(es) not (max abs diff {worst:.3g}): report it to onnxruntime")
    if not spread.get("passed", True):
        return "runtime", (f"ONNX Runtime's optimisation levels disagree among themselves ({spread.get('levels')}: "
                           f"max abs diff {spread['max_abs_diff']:.3g}): report it to onnxruntime")
    if "error" in reference:
        return "undetermined", (f"the subgraph departs from torch at every ONNX Runtime level (max abs diff "
                                f"{worst:.3g}), but ONNX's reference evaluator could not run it "
                                f"({reference['error']}), so exporter and runtime cannot be told apart")
    vs_torch, vs_ort = reference["vs_torch"], reference["vs_onnxruntime"]
    if vs_torch["passed"]:
        return "runtime", (f"ONNX's reference evaluator agrees with torch (max abs diff {vs_torch['max_abs_diff']:.3g}) "
                           f"while ONNX Runtime departs at every level (max abs diff {worst:.3g}): the graph is right, "
                           "ONNX Runtime computes it wrong; report it to onnxruntime")
    if vs_ort["passed"]:
        who = f"torch.onnx ({exporter} exporter)" if exporter else "the exporter that wrote the file"
        return "exporter", (f"the module's ONNX subgraph, run alone on torch's inputs, departs from torch at every "
                            f"ONNX Runtime optimisation level ({', '.join(levels)}; max abs diff {worst:.3g}), and "
                            f"ONNX's reference evaluator computes what ONNX Runtime computes (max abs diff "
                            f"{vs_ort['max_abs_diff']:.3g}): the graph itself computes something else than the torch "
                            f"module; report it to {who}")
    return "undetermined", (f"ONNX's reference evaluator agrees with neither torch (max abs diff "
                            f"{vs_torch['max_abs_diff']:.3g}) nor ONNX Runtime (max abs diff "
                            f"{vs_ort['max_abs_diff']:.3g})")
