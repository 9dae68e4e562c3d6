"""Teacher forcing: each module's ONNX computation on torch's own values at its inputs, all in one run.

A layer's end-to-end difference mixes its own error with all it inherited; in float16 the inherited
rounding, grown through the depth, hides a 5% fault. The *own* error of a module is what its ONNX nodes
get wrong when they read exactly what torch gave them. One rewritten graph measures it for every module
at once: each compared module's ONNX value (its *boundary*) stays an output, and every node that read it
reads instead a new graph input fed with torch's output of that module. A module's ONNX value is then
computed from torch's values at the boundaries it reads (:func:`boundaries` finds them, walking back
through the graph from the module's value until it meets another module's value or a graph input), so
its difference from torch's output is its own error only, plus that of any functional op between it and
those boundaries (a ``x + pos_embed`` in a ``forward``, which belongs to no module).

Forced values are fed in the graph's own type at that value (float16 in a float16 file): the rounding of
the fed input is part of the module's own error, as it is in deployment. In an int8 QDQ file the forced
value is the float output of a module, before the ``QuantizeLinear`` that the next module reads: the next
module's own error includes the quantisation of its input, as it should.

A value read inside a subgraph (``If``, ``Loop``) keeps its computed value; a module whose boundary
ONNX Runtime could not take (a shape that differs from torch's) is not forced and its readers inherit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import onnx

__all__ = ["Boundaries", "FORCED_PREFIX", "QDQ_OPS", "boundaries", "forced_dtype", "restore", "rewire"]

#: the quantiser's nodes (never named in a module's own computation: no quantiser can leave them in float)
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
#: the graph input that feeds torch's value of ONNX value ``v`` is named ``FORCED_PREFIX + v``
FORCED_PREFIX = "onnx_parity.torch/"


@dataclass
class Boundaries:
    """What each module's own computation reads, by its ONNX value."""

    feeders: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Value -> the other modules' values its own computation reads (the boundaries to force)."""
    own_nodes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Value -> the names of the nodes between it and those boundaries (its own computation), graph order;
    without the quantiser's own ``QuantizeLinear``/``DequantizeLinear`` nodes: these are the names that
    ``onnxruntime.quantization``'s ``nodes_to_exclude`` takes."""
    regions: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Value -> the indices of every node of its own computation (the quantiser's among them), graph order:
    what a forced run of that module alone needs."""


def boundaries(proto: "onnx.ModelProto", values: Iterable[str]) -> Boundaries:
    """For each of ``values`` (the compared modules' ONNX values), the boundaries it reads and its own nodes."""
    graph = proto.graph
    wanted = set(values)
    producer: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for v in node.output:
            if v:
                producer[v] = i
    out = Boundaries()
    for value in wanted:
        start = producer.get(value)
        if start is None:
            continue
        region: set[int] = set()
        feeders: set[str] = set()
        stack = [start]
        while stack:
            i = stack.pop()
            if i in region:
                continue
            region.add(i)
            for inp in graph.node[i].input:
                if inp in wanted and inp != value:
                    feeders.add(inp)
                elif inp in producer:
                    stack.append(producer[inp])
        out.regions[value] = tuple(sorted(region))
        order = [i for i in out.regions[value] if graph.node[i].op_type not in QDQ_OPS]
        out.feeders[value] = tuple(sorted(feeders))
        out.own_nodes[value] = tuple(graph.node[i].name for i in order)
    return out


def forced_dtype(elem_type: int) -> "np.dtype | None":
    """The numpy dtype that feeds a forced value of ONNX ``elem_type``; ``None`` when it cannot be fed
    (bfloat16 and every non-float type: those readers inherit)."""
    import numpy as np
    import onnx

    kinds = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16,
             onnx.TensorProto.DOUBLE: np.float64}
    found = kinds.get(elem_type)
    return np.dtype(found) if found is not None else None


def rewire(graph: "onnx.GraphProto", forced: Iterable[str]) -> list[tuple[int, int, str]]:
    """Point every top-level reader of a ``forced`` value at its forced input, in place; returns the edits
    ``(node, input position, old name)`` for :func:`restore`."""
    names = set(forced)
    edits = []
    for i, node in enumerate(graph.node):
        for k, inp in enumerate(node.input):
            if inp in names:
                edits.append((i, k, inp))
                node.input[k] = FORCED_PREFIX + inp
    return edits


def restore(graph: "onnx.GraphProto", edits: list[tuple[int, int, str]]) -> None:
    """Undo :func:`rewire`."""
    for i, k, old in edits:
        graph.node[i].input[k] = old
