"""Smaller still: the smallest contiguous node range of a module's subgraph that still diverges.

A divergent module may be a whole block or stage (its children passed, the fault is in the
block's own ops, or its children could not be compared). :func:`reduce_cut` narrows its
subgraph (:class:`.isolate.ModuleCut`) the way Polygraphy's ``debug reduce`` does: the nodes in
topological order (the file's), first a bisection for the end of the range (the smallest
prefix that diverges), then one for its start (the largest start that still diverges with
that end), then a linear pass that drops one node at a time from either side while the range
still diverges. Each node keeps the torch module its scope names.

How a range is judged, honestly, since torch's values *inside* a module are only known at
the boundaries of the modules in it:

``torch`` (an exporter fault: ONNX Runtime and the reference evaluator agree, so only torch can
    tell): the range is fed torch's values and its outputs are compared with torch's, at the
    *anchors*: the inputs and outputs of the compared rows inside the module
    (:attr:`.isolate.ModuleCut.anchors`). A range that reads a floating-point value torch has no
    value for, or makes no anchor, cannot be judged and counts as not diverging (so the range
    kept is never smaller than what torch's values can show). Integer values (shapes) are
    fed from ONNX Runtime's run of the whole module subgraph on torch's inputs.
``reference`` (a runtime fault): the range is fed ONNX Runtime's own values, from a run of the
    whole module subgraph on torch's inputs at the level that fails, and its outputs under
    ONNX Runtime are compared with ONNX's reference evaluator on the same feeds. Torch is not
    needed: both sides run the same graph on the same values.

Both use the per-layer tolerance without growth (``atol + rtol * rms``). Bisection assumes a
range that diverges keeps diverging when it grows; the linear pass and the final check (the
range returned diverges, or nothing is returned) keep a violation from giving a wrong answer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..onnxfile.subgraph import GraphPart
from ..tolerances import REDUCE_ABOVE_NODES, REDUCE_LINEAR_STEPS
from .blame import measure_values, run_levels, run_reference

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import onnx

    from .isolate import ModuleCut

__all__ = ["Reduction", "reduce_cut"]


@dataclass
class Reduction(GraphPart):
    """The smallest diverging node range of a module's subgraph, ready to run on its own."""

    proto: "onnx.ModelProto"
    inputs: dict[str, "np.ndarray"]
    """What the range is fed: torch's values (``torch``) or ONNX Runtime's (``reference``)."""
    expected: dict[str, "np.ndarray"]
    """What its outputs must be: torch's (``torch``) or the reference evaluator's (``reference``)."""
    judged_by: str
    level: str
    start: int
    stop: int
    """The range ``[start, stop)`` among the nodes of the module's subgraph."""
    node_modules: list[str]
    measured: dict[str, Any]
    runs: int
    """Ranges judged on the way."""
    of_nodes: int
    """Nodes of the module's subgraph it was reduced from."""
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        mods = ", ".join(dict.fromkeys(m or "(no module)" for m in self.node_modules))
        return (f"{self.nodes} of the module's {self.of_nodes} nodes ({', '.join(self.ops)}), in {mods}; "
                f"judged against {'torch' if self.judged_by == 'torch' else 'the reference evaluator'}")


def reduce_cut(
    cut: "ModuleCut",
    *,
    judged_by: str,
    level: str,
    above: int = REDUCE_ABOVE_NODES,
    new_ops: Any = None,
) -> "Reduction | None":
    """The smallest diverging node range of ``cut`` (None when ``cut`` has ``above`` nodes or fewer, or no
    range smaller than it can be shown to diverge). ``judged_by``: ``torch`` or ``reference`` (module
    docstring); ``level``: the ONNX Runtime optimisation level run; ``new_ops``: reference-evaluator ops
    to use instead of its own."""
    nodes = list(cut.proto.graph.node)
    k = len(nodes)
    if k <= above:
        return None
    ranges = _Ranges(cut, nodes, judged_by=judged_by, level=level, new_ops=new_ops)
    if not ranges.judge(0, k):
        return None
    start, stop = _narrow(ranges.judge, k)
    verdict, kept = ranges.cache[(start, stop)]
    if not verdict or stop - start >= k:
        return None
    proto, feeds, want, m = kept
    return Reduction(proto=proto, inputs=feeds, expected=want, judged_by=judged_by, level=level, start=start,
                     stop=stop, node_modules=[cut.node_modules[i] for i in range(start, stop)], measured=m,
                     runs=sum(1 for v, _ in ranges.cache.values() if v is not None), of_nodes=k)


def _narrow(judge: Callable[[int, int], "bool | None"], k: int) -> tuple[int, int]:
    """``[start, stop)``: bisection for the end (the smallest prefix that diverges), then for the start (the
    largest that still diverges with that end), then one node at a time from the front, then the back."""
    stop = _bisect_first(1, k, lambda j: bool(judge(0, j)))
    start = _bisect_last(0, stop - 1, lambda i: bool(judge(i, stop)))
    for _ in range(REDUCE_LINEAR_STEPS):  # drop one node at a time from the front, then the back
        nxt = next((i for i in range(start + 1, stop) if judge(i, stop) is not None), None)
        if nxt is None or not judge(nxt, stop):
            break
        start = nxt
    for _ in range(REDUCE_LINEAR_STEPS):
        nxt = next((j for j in range(stop - 1, start, -1) if judge(start, j) is not None), None)
        if nxt is None or not judge(start, nxt):
            break
        stop = nxt
    return start, stop


_FLOATS = {1, 10, 11, 16}


class _Ranges:
    """The node ranges of one cut, each built as a model of its own and judged once (:attr:`cache`)."""

    def __init__(self, cut: "ModuleCut", nodes: list[Any], *, judged_by: str, level: str, new_ops: Any) -> None:
        from ..onnxfile.subgraph import all_values

        self.cut, self.nodes, self.judged_by, self.level, self.new_ops = cut, nodes, judged_by, level, new_ops
        self.types = types = _types(cut.proto)
        self.inits = {t.name for t in cut.proto.graph.initializer}
        self.constants = {o for n in nodes if n.op_type == "Constant" for o in n.output}
        self.values = dict(cut.inputs)
        self.values.update(run_levels(all_values(cut.proto, types), cut.inputs, [level], cut.settings)[level])
        self.read_later: dict[int, set[str]] = {}
        self.outputs = {o.name for o in cut.proto.graph.output}
        self.cache: dict[tuple[int, int], tuple[bool | None, Any]] = {}
        self.known = {**cut.inputs, **cut.anchors}  # the cut's own inputs (as its verdict was made) and torch's anchors

    def build(self, i: int, j: int) -> tuple[Any, dict[str, Any], list[str]] | None:
        """The range ``[i, j)`` as a model, its feeds and its outputs; None when it cannot be judged."""
        from ..onnxfile.subgraph import extract_nodes, range_boundary

        cut, nodes, types, values = self.cut, self.nodes, self.types, self.values
        reads, made = range_boundary(nodes, range(i, j), self.inits)
        reads = [v for v in reads if v not in self.constants]
        if self.judged_by == "torch":
            if any(types.get(v, 1) in _FLOATS and v not in self.known for v in reads):
                return None  # reads a float torch has no value for: cannot be judged
            feeds = {v: self.known[v] if v in self.known else values[v] for v in reads}
            outs = [v for n in nodes[i:j] for v in n.output if v in cut.anchors and v not in cut.inputs]
        else:
            feeds = {v: values[v] for v in reads}
            later = self.read_later.setdefault(j, {v for n in nodes[j:] for v in n.input} | self.outputs)
            outs = [v for n in nodes[i:j] for v in n.output if v in made and v in later and types.get(v, 1) in _FLOATS]
        if not outs:
            return None
        info = {v: (types.get(v, 1), a.shape) for v, a in feeds.items()}
        info.update({v: (types.get(v, 1), values[v].shape) for v in outs})
        proto = extract_nodes(cut.proto, range(i, j), list(dict.fromkeys(outs)), value_info=info, types=types,
                              name=f"{cut.module} [{i}:{j}]")
        return proto, feeds, list(dict.fromkeys(outs))

    def judge(self, i: int, j: int) -> bool | None:
        """Whether ``[i, j)`` diverges; None when it cannot be judged."""
        cache, cut = self.cache, self.cut
        if (i, j) not in cache:
            made = self.build(i, j) if 0 <= i < j <= len(self.nodes) else None
            if made is None:
                cache[(i, j)] = (None, None)
            else:
                proto, feeds, outs = made
                got = run_levels(proto, feeds, [self.level], cut.settings)[self.level]
                want = ({v: cut.anchors[v] for v in outs} if self.judged_by == "torch"
                        else run_reference(proto, feeds, self.new_ops))
                m = measure_values(want, got, cut.atol, cut.rtol)
                cache[(i, j)] = (not m["passed"], (proto, feeds, want, m))
        return cache[(i, j)][0]


def _bisect_first(lo: int, hi: int, diverges: Callable[[int], bool]) -> int:
    """The least ``n`` in ``[lo, hi]`` with ``diverges(n)``, given ``diverges(hi)``."""
    while lo < hi:
        mid = (lo + hi) // 2
        if diverges(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def _bisect_last(lo: int, hi: int, diverges: Callable[[int], bool]) -> int:
    """The greatest ``n`` in ``[lo, hi]`` with ``diverges(n)``, given ``diverges(lo)``."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if diverges(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _types(proto: "onnx.ModelProto") -> dict[str, int]:
    """Element type of every value of a (small, self-contained) model, by shape inference."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False)
    g = inferred.graph
    types = {t.name: t.data_type for t in g.initializer}
    for vi in [*g.input, *g.output, *g.value_info]:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    return types
