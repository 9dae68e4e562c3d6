"""Scalar probes of a graph's values, as nodes to append to the file (the headroom pass, :mod:`.headroom`).

For every floating-point node output: ``ReduceMax(Abs(v))`` (its largest magnitude; it skips NaN) and
``ReduceSum(Abs(v))`` (NaN exactly when ``v`` holds a NaN: :func:`nonfinite` reads the two), both scalars,
in float32 (a float16 or double value is cast first; the cast is exact or widening). For a fused
normalisation or Softmax node, what it computes inside, modelled in float32 on its input: the largest
squared deviation from the mean and the largest variance (LayerNormalization over its ``axis``,
GroupNormalization over each group, InstanceNormalization over each channel; the mean square for an RMS
normalisation), the largest sum of exponentials of a Softmax (after it subtracts the maximum, as kernels do).

The returned ``ModelProto`` holds only the new nodes and one output, every scalar gathered: appended to the
file's bytes, protobuf merges it into the model. Reduce ops take ``axes`` as an attribute before opset 18 (ReduceSum: 13) and as
an input from then on.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .scopes import FLOAT_TYPES

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["OUTPUT", "Probe", "infinite_constants", "nonfinite", "probe_graph"]

_PREFIX = "onnx_parity_headroom/"
#: the appended graph output: every probed scalar, in :class:`Probe` order
OUTPUT = _PREFIX + "gathered"
_SKIP_OPS = {"Constant", "ConstantOfShape"}  # the file's constants, not computed values
#: fused op -> (what its inner squares are, how its input is grouped into rows: "axis", "group", "instance")
_NORMS = {"LayerNormalization": ("squared deviation", "axis"), "GroupNormalization": ("squared deviation", "group"),
          "InstanceNormalization": ("squared deviation", "instance"), "RMSNormalization": ("square", "axis"),
          "SimplifiedLayerNormalization": ("square", "axis")}


def infinite_constants(nodes: Sequence[onnx.NodeProto], initializers: Sequence[onnx.TensorProto] = ()) -> set[str]:
    """Names of the constants (``Constant`` and ``ConstantOfShape`` outputs, initializers whose data the graph
    holds) with an Inf or NaN in them."""
    import numpy as np
    from onnx import numpy_helper

    def holds(tensor: onnx.TensorProto) -> bool:
        try:
            a = numpy_helper.to_array(tensor)
        except Exception:  # no data here (cleared, external): nothing known
            return False
        return a.dtype.kind == "f" and a.size > 0 and not bool(np.isfinite(a).all())

    found = {t.name for t in initializers if t.data_type in FLOAT_TYPES and holds(t)}
    for node in nodes:
        if node.op_type in ("Constant", "ConstantOfShape"):
            if any(a.name == "value" and a.HasField("t") and holds(a.t) for a in node.attribute):
                found.update(v for v in node.output if v)
            elif any(a.name == "value_float" and not np.isfinite(a.f) for a in node.attribute):
                found.update(v for v in node.output if v)
    return found


@dataclass
class Probe:
    """One probed quantity: node index, what, the value (or node) name, the element type it has in the file,
    and where in :data:`OUTPUT` its largest magnitude and (a stored value) the sum of its magnitudes lie."""

    node: int
    what: str
    where: str
    elem_type: int
    max_at: int
    sum_at: int | None = None


def probe_graph(nodes: Sequence[onnx.NodeProto], types: dict[str, int], opset: int,
                initializers: Sequence[onnx.TensorProto] = ()) -> tuple[onnx.ModelProto, list[Probe]]:
    """The nodes and the one output (:data:`OUTPUT`, a float32 vector) to append, and what each entry measures.

    A node that reads a constant holding Inf or NaN (a max-pool's ``Pad`` with ``-inf``, an attention mask added
    as ``-inf``) makes them by design: its outputs are not probed (what reads them, a MaxPool, a Softmax, is)."""
    import onnx

    b = _Builder(opset)
    probes: list[Probe] = []
    deliberate = infinite_constants(nodes, initializers)
    for i, node in enumerate(nodes):
        if node.op_type in _SKIP_OPS or any(v in deliberate for v in node.input):
            continue
        for v in node.output:
            t = types.get(v)
            if v and t in FLOAT_TYPES:
                a = b.op("Abs", [b.as_float(v, t)])
                at = b.collect([b.reduce("ReduceMax", a, None), b.reduce("ReduceSum", a, None)])
                probes.append(Probe(i, "output", v, t, at[0], at[1]))
        t = types.get(node.input[0]) if node.input else None
        if t not in FLOAT_TYPES:
            continue
        label = node.name or node.output[0]
        if node.op_type in _NORMS and node.domain in ("", "ai.onnx", "com.microsoft"):
            squares, grouping = _NORMS[node.op_type]
            rows = b.rows(b.as_float(node.input[0], t), node, grouping)
            if rows is None:
                continue
            centred = b.op("Sub", [rows, b.reduce("ReduceMean", rows, [1], keepdims=1)]) \
                if squares == "squared deviation" else rows
            sq = b.op("Mul", [centred, centred])
            at = b.collect([b.reduce("ReduceMax", sq, None),
                            b.reduce("ReduceMax", b.reduce("ReduceMean", sq, [1], keepdims=1), None)])
            mean_name = "variance" if squares == "squared deviation" else "mean square"
            probes += [Probe(i, f"{what} inside {node.op_type}", label, t, k) for what, k in zip((squares, mean_name), at)]
        elif node.op_type == "Softmax" and node.domain in ("", "ai.onnx"):
            x = b.as_float(node.input[0], t)
            axis = _attr(node, "axis", -1 if opset >= 13 else 1)
            if opset < 13:  # the old Softmax works on the input flattened at its axis
                x, axis = b.op("Flatten", [x], axis=axis), 1
            shifted = b.op("Sub", [x, b.reduce("ReduceMax", x, [axis], keepdims=1)])
            total = b.reduce("ReduceSum", b.op("Exp", [shifted]), [axis], keepdims=1)
            at = b.collect([b.reduce("ReduceMax", total, None)])
            probes.append(Probe(i, "sum of exponentials inside Softmax", label, t, at[0]))
    model = onnx.ModelProto()
    if probes:
        b.finish()
        model.graph.node.extend(b.nodes)
        model.graph.output.append(onnx.helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, [b.size]))
    return model, probes


def nonfinite(largest: float, total: float) -> bool:
    """Whether a value holds Inf or NaN, from its probes: a NaN makes the sum of magnitudes NaN (an Inf makes
    it Inf, but so may a large finite sum), an Inf makes the largest magnitude Inf (an empty tensor's is -Inf)."""
    import math

    return math.isnan(total) or largest == math.inf


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


class _Builder:
    """Appends uniquely named nodes; each method returns the name of the value it makes."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.nodes: list[Any] = []
        self.links: list[list[str]] = []  # per probed value, its scalars (as 1-D tensors)
        self.size = 0
        self._one = self.const([1])

    def collect(self, scalars: list[str]) -> list[int]:
        """Gather ``scalars`` into the one output vector (:meth:`finish`); their positions in it."""
        self.links.append([self.op("Reshape", [v, self._one]) for v in scalars])
        self.size += len(scalars)
        return list(range(self.size - len(scalars), self.size))

    def finish(self) -> None:
        """The gathered vector: a chain of Concat nodes, one link a probed value, written after every probe.

        Not an output per scalar: ONNX Runtime orders the nodes by a depth-first walk back from the graph's
        leaves, the input of highest index first, so probes left as leaves of their own run after the whole
        model and keep every intermediate tensor alive until then (measured: 4 GB more than the plain run for
        vit_small at batch 16). Each link's highest input is the link before it, so the walk goes down the
        chain first and reaches the first value's probes first: each probe runs right after its value.
        """
        import onnx

        gathered: list[str] = []
        for parts in self.links:
            out = self._name()
            self.nodes.append(onnx.helper.make_node("Concat", gathered + parts, [out], name=out, axis=0))
            gathered = [out]
        if gathered:
            self.nodes.append(onnx.helper.make_node("Identity", gathered, [OUTPUT], name=OUTPUT))

    def _name(self) -> str:
        return f"{_PREFIX}{len(self.nodes)}"

    def op(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        import onnx

        out = self._name()
        self.nodes.append(onnx.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def const(self, values: list[int]) -> str:
        import onnx

        out = self._name()
        self.nodes.append(onnx.helper.make_node("Constant", [], [out], name=out, value=onnx.helper.make_tensor(
            out, onnx.TensorProto.INT64, [len(values)], values)))
        return out

    def as_float(self, value: str, elem_type: int | None) -> str:
        return value if elem_type == 1 else self.op("Cast", [value], to=1)

    def reduce(self, op_type: str, x: str, axes: list[int] | None, keepdims: int = 0) -> str:
        """``op_type`` over ``axes`` (``None``: all of them, to a scalar)."""
        if axes is None:
            return self.op(op_type, [x], keepdims=keepdims)
        if self.opset >= (13 if op_type == "ReduceSum" else 18):
            return self.op(op_type, [x, self.const(axes)], keepdims=keepdims)
        return self.op(op_type, [x], axes=axes, keepdims=keepdims)

    def rows(self, x: str, node: onnx.NodeProto, grouping: str) -> str | None:
        """``x`` as 2-D, each row what one normalisation sees (``None``: a grouping the node does not say)."""
        if grouping == "axis":
            return self.op("Flatten", [x], axis=_attr(node, "axis", -1))
        groups = _attr(node, "num_groups", None) if grouping == "group" else 0  # instance: one group a channel
        if groups is None:
            return None
        # (N, C, ...) -> (N, groups, rest) -> (N * groups, rest)
        return self.op("Flatten", [self.op("Reshape", [x, self.const([0, groups, -1])])], axis=2)
