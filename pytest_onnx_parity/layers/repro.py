"""A divergence isolated: the module cut out (:mod:`.isolate`), who to blame (:mod:`.blame`), and the
smallest node range that still diverges (:mod:`.reduce`), in one call.

:func:`isolate_divergence` is what the ``layers`` check runs when it places a first divergence
(its message and details then carry the blame line) and what a reproducer bundle writes out
(``module.onnx``, ``reproduce.py --module``, ``ISSUE.md``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..axes import ORT_OPT_LEVELS
from .blame import Blame, blame_cut
from .isolate import ModuleCut, cut_module
from .reduce import Reduction, reduce_cut
from .results import LayerComparison

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["Isolation", "isolate_divergence"]


@dataclass
class Isolation:
    """The divergent module alone, the verdict on it, and (for a large module) its smallest diverging range."""

    cut: ModuleCut
    blame: Blame
    reduction: Reduction | None = None
    notes: list[str] = field(default_factory=list)

    def message(self) -> str:
        """Two or three lines for a check's message."""
        lines = [f"module subgraph: {self.cut.describe()}"]
        if self.reduction is not None:
            lines.append(f"reduced to {self.reduction.describe()}")
        lines.append(self.blame.line())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        c = self.cut
        out: dict[str, Any] = {
            "module": c.module, "module_type": c.module_type, "fused": list(c.fused), "nodes": c.nodes,
            "file_nodes": c.file_nodes, "ops": list(c.ops), "node_modules": c.node_modules,
            "module_types": c.module_types, "inputs": {k: {"shape": list(v.shape), "source": c.sources[k]}
                                                        for k, v in c.inputs.items()},
            "outputs": {k: {"shape": list(v.shape)} for k, v in c.outputs.items()},
            "atol": c.atol, "rtol": c.rtol, "blame": self.blame.to_dict(), "notes": list(self.notes),
        }
        r = self.reduction
        if r is not None:
            out["reduced"] = {"nodes": r.nodes, "of_nodes": r.of_nodes, "start": r.start, "stop": r.stop,
                              "ops": list(r.ops), "node_modules": r.node_modules, "judged_by": r.judged_by,
                              "level": r.level, "measured": r.measured, "runs": r.runs}
        return out


def isolate_divergence(
    model: Any,
    onnx_file: "str | os.PathLike[str] | onnx.ModelProto",
    x: Any,
    comparison: LayerComparison,
    *,
    layer: str | None = None,
    exporter: str | None = None,
    level: str = "all",
    unsimplified: "str | os.PathLike[str] | None" = None,
    reduce: bool = True,
    new_ops: Any = None,
    settings: Any = None,
) -> Isolation:
    """Cut ``layer`` (default: the first divergence of ``comparison``) out of ``onnx_file``, blame it and, when
    it is large, reduce it.

    ``x``: the batch the comparison ran (numpy). ``exporter``: named in the blame line. ``level``: the ONNX
    Runtime level the gate ran (the reduction runs it when it fails there). ``unsimplified``: the file before a
    simplifier ran; when its per-layer check passes on ``x``, the blame is ``simplifier`` (API only).
    ``new_ops``: reference-evaluator ops to use instead of its own (tests). ``settings``: the runtime the
    comparison ran on (:class:`~..runtime.runner.RunSettings`): the cut, the blame and the reduction run there.
    """
    import numpy as np

    x = np.ascontiguousarray(np.asarray(x))
    cut = cut_module(model, onnx_file, x, comparison, layer, settings=settings)
    notes: list[str] = []
    before = None
    if unsimplified is not None:
        from .api import compare_layers

        other = compare_layers(model, unsimplified, x, atol=comparison.atol, rtol=comparison.rtol, settings=settings)
        before = {"passed": other.passed, "how": f"its per-layer check: {other.message()}", "file": str(unsimplified)}
    blame = blame_cut(cut, exporter=exporter, unsimplified=before, new_ops=new_ops)
    reduction = None
    if reduce:
        failing = [lv for lv, s in blame.levels.items() if not s["passed"]]
        run_at = level if level in failing else (failing[0] if failing else level)
        judged_by = "reference" if blame.verdict == "runtime" and "error" not in blame.reference else "torch"
        if failing and level in ORT_OPT_LEVELS:
            reduction = reduce_cut(cut, judged_by=judged_by, level=run_at, new_ops=new_ops)
            if reduction is None and cut.nodes > _above():
                notes.append(f"not reduced: no node range smaller than the module's {cut.nodes} nodes could be shown "
                             f"to diverge (judged against {judged_by})")
    return Isolation(cut, blame, reduction, notes)


def _above() -> int:
    from ..tolerances import REDUCE_ABOVE_NODES

    return REDUCE_ABOVE_NODES
