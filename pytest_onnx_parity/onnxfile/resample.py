"""Pillow's ``Image.resize`` as ONNX nodes, bit for bit.

Pillow (``src/libImaging/Resample.c``) resizes an 8-bit image in two
separable passes, horizontal first, each one rounded and clipped to uint8.
Each pass multiplies the pixels by fixed-point coefficients that depend only on
the two sizes and the filter:

* ``scale = in / out``, ``filterscale = max(scale, 1)``,
  ``support = filter_support * filterscale``;
* output pixel ``x``: ``center = (x + 0.5) * scale``, taps
  ``xmin = (int)(center - support + 0.5)`` (at least 0) to
  ``xmax = (int)(center + support + 0.5)`` (at most ``in``), weight
  ``filter((i - center + 0.5) * (1 / filterscale))``, divided by the sum of the
  weights (summed in tap order);
* fixed point with 22 fractional bits: ``(int)(k * 2**22 + 0.5)`` for
  ``k >= 0``, ``(int)(k * 2**22 - 0.5)`` below, truncated toward zero;
* each output: ``clip8((2**21 + sum(pixel * kk)) >> 22)``.

This module computes those coefficients inside the graph, from the dynamic
image size, with the same float64 operations in the same order (the weight sum
uses ``CumSum``, which adds in tap order as the C loop does; taps outside the
window are exact zeros), and keeps them as ``kk * 2**-22`` (exact: a power of
two). A pass is block-banded: the outputs go in blocks of :data:`BLOCK`
consecutive ones; a block reads one span of consecutive input rows (whole
rows of the tensor ``(axis, everything else)``, gathered as uint8, then
widened to float64) and multiplies it by its ``(BLOCK, span)`` coefficient
matrix in one batched float64 product. Every product ``pixel * kk`` and every
partial sum is an integer times 2**-22, that integer at most
``255 * span * 2**23`` (far below 2**53), so the product is exact in any
summation order, and ``floor(s + 0.5)`` clipped to
0..255 is Pillow's ``clip8``. The work is O(outputs x span) per row, not
O(outputs x inputs) as a dense matrix would cost.

Only the output rows and columns that survive the centre crop are computed,
and only the input rows and columns they touch are read: exact, because the
passes are separable.

``nearest`` is not a convolution in Pillow (it is an affine transform with an
accumulated coordinate) and is not built here; timm's pretrained configs use
``bilinear`` and ``bicubic`` only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["FILTERS", "GraphBuilder", "apply_pass", "fixed_point_round", "resize_coefficients", "two_passes"]

#: Pillow's filter supports, by timm's interpolation name.
FILTERS: dict[str, float] = {"box": 0.5, "bilinear": 1.0, "hamming": 1.0, "bicubic": 2.0, "lanczos": 3.0}
PRECISION_BITS = 22  # Pillow's (32 - 8 - 2)


@dataclass
class GraphBuilder:
    """A few helpers around ``onnx.helper`` to write a graph as straight-line code."""

    prefix: str = ""
    nodes: list[Any] = field(default_factory=list)
    initializers: list[Any] = field(default_factory=list)
    _count: list[int] = field(default_factory=lambda: [0])  # shared with subgraph builders
    _consts: dict[tuple, str] = field(default_factory=dict)

    def name(self, hint: str) -> str:
        self._count[0] += 1
        return f"{self.prefix}{hint}_{self._count[0]}"

    def op(self, op_type: str, *inputs: str, out: str | None = None, node_name: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        output = out or self.name(op_type.lower())
        name = node_name or (self.name(op_type.lower() + "_node") if out else output)
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=name, **attrs))
        return output

    def const(self, value: Any, dtype: Any = np.float64) -> str:
        from onnx import numpy_helper

        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            name = self.name("const")
            self.initializers.append(numpy_helper.from_array(array, name))
            self._consts[key] = name
        return self._consts[key]

    def sub(self) -> "GraphBuilder":
        """A builder for a subgraph (If branch): own nodes, constants shared with this one."""
        return GraphBuilder(prefix=self.prefix, initializers=self.initializers, _count=self._count, _consts=self._consts)

    def subgraph(self, output: str, name: str) -> Any:
        from onnx import TensorProto, helper

        final = self.op("Identity", output, out=self.name(name + "_out"))
        return helper.make_graph(self.nodes, self.prefix + name, [],
                                 [helper.make_tensor_value_info(final, TensorProto.UINT8, None)])

    # float64 / int64 shorthands
    def f64(self, x: str) -> str:
        from onnx import TensorProto

        return self.op("Cast", x, to=TensorProto.DOUBLE)

    def i64(self, x: str) -> str:
        from onnx import TensorProto

        return self.op("Cast", x, to=TensorProto.INT64)

    def where(self, cond: str, a: str, b: str) -> str:
        return self.op("Where", cond, a, b)

    def guard(self, ok: str, value: str, message: str) -> str:
        """``value``, but ONNX Runtime fails at node ``message`` when the bool ``ok`` is false.

        ``Range(0, 1, delta)`` with ``delta = 0`` is an error in ONNX Runtime
        ("delta in Range operator can not be zero"); its node name is the message.
        """
        delta = self.op("Squeeze", self.i64(ok))
        checked = self.op("Range", self.const(0, np.int64), self.const(1, np.int64), delta, node_name=message)
        # [0] times zero: `value` is unchanged, but depends on the check, which therefore runs first
        return self.op("Add", value, self.op("Mul", checked, self.const([0], np.int64)))


def _filter_nodes(g: GraphBuilder, interpolation: str, x: str, *, cubic_a: float = -0.5) -> str:
    """Pillow's filter function of ``interpolation`` on the float64 tensor ``x``."""
    c = g.const
    zero, one = c(0.0), c(1.0)
    if interpolation == "box":  # x > -0.5 && x <= 0.5
        inside = g.op("And", g.op("Greater", x, c(-0.5)), g.op("LessOrEqual", x, c(0.5)))
        return g.where(inside, one, zero)
    ax = g.op("Abs", x)
    if interpolation == "bilinear":
        return g.where(g.op("Less", ax, one), g.op("Sub", one, ax), zero)
    if interpolation == "bicubic":
        # ((a + 2.0) * x - (a + 3.0)) * x * x + 1 ;  (((x - 5) * x + 8) * x - 4) * a
        near = g.op("Add", g.op("Mul", g.op("Mul", g.op("Sub", g.op("Mul", c(cubic_a + 2.0), ax), c(cubic_a + 3.0)), ax), ax), one)
        far = g.op("Mul", g.op("Sub", g.op("Mul", g.op("Add", g.op("Mul", g.op("Sub", ax, c(5.0)), ax), c(8.0)), ax), c(4.0)), c(cubic_a))
        return g.where(g.op("Less", ax, one), near, g.where(g.op("Less", ax, c(2.0)), far, zero))
    if interpolation == "hamming":
        # sin(x) / x * (0.54f + 0.46f * cos(x)) with x = |x| * M_PI; the constants are C floats
        px = g.op("Mul", ax, c(math.pi))
        window = g.op("Add", c(float(np.float32(0.54))), g.op("Mul", c(float(np.float32(0.46))), g.op("Cos", px)))
        value = g.op("Mul", g.op("Div", g.op("Sin", px), px), window)
        return g.where(g.op("Equal", ax, zero), one, g.where(g.op("GreaterOrEqual", ax, one), zero, value))
    if interpolation == "lanczos":
        def sinc(v: str) -> str:
            pv = g.op("Mul", v, c(math.pi))
            return g.where(g.op("Equal", v, zero), one, g.op("Div", g.op("Sin", pv), pv))

        inside = g.op("And", g.op("LessOrEqual", c(-3.0), x), g.op("Less", x, c(3.0)))
        return g.where(inside, g.op("Mul", sinc(x), sinc(g.op("Div", x, c(3.0)))), zero)
    raise ValueError(f"no Pillow convolution filter for interpolation {interpolation!r}")


#: Outputs per block of the block-banded product (see :func:`resize_coefficients`).
BLOCK = 8


def resize_coefficients(
    g: GraphBuilder, interpolation: str, in_size: str, out_size: str, start: str, stop: str, *, cubic_a: float = -0.5,
    block: int = BLOCK, short_span: bool = False,
) -> tuple[str, str]:
    """Pillow's fixed-point coefficients of outputs ``start..stop`` of a resize from ``in_size`` to ``out_size``.

    All four are int64 tensors of shape ``[1]``. The outputs go in blocks of
    ``block`` consecutive ones (the last block repeats output ``stop - 1``);
    block ``b`` reads the ``L`` consecutive inputs from the first tap of its
    first output, ``L`` the widest such span. Returns ``(kk, index)``: ``kk``
    float64 ``(blocks, block, L)`` integer coefficients times 2**-22 (exact zeros outside
    each output's window), ``index`` int64 ``(blocks, L)`` the inputs each
    block reads (clamped to the image where the span runs past it; their
    coefficients are zero). ``short_span`` plants a fault for tests: every
    block reads one input fewer (the widest window loses its last tap).
    """
    c = g.const
    i64 = np.int64
    support_of = FILTERS[interpolation]
    in_f, out_f = g.f64(in_size), g.f64(out_size)
    scale = g.op("Div", in_f, out_f)  # (double)(in1 - in0) / outSize
    filterscale = g.op("Max", scale, c([1.0]))
    support = g.op("Mul", c(support_of), filterscale)
    ss = g.op("Div", c(1.0), filterscale)
    count = g.op("Sub", stop, start)
    blocks = g.op("Div", g.op("Add", count, c([block - 1], i64)), c([block], i64))
    xx = g.op("Range", c(0, i64), g.op("Squeeze", g.op("Mul", blocks, c([block], i64))), c(1, i64))
    xx = g.f64(g.op("Add", g.op("Min", xx, g.op("Sub", count, c([1], i64))), start))
    center = g.op("Mul", g.op("Add", xx, c(0.5)), scale)  # in0 + (xx + 0.5) * scale, in0 = 0
    xmin = g.op("Max", g.op("Floor", g.op("Add", g.op("Sub", center, support), c(0.5))), c(0.0))
    xmax = g.op("Min", g.op("Floor", g.op("Add", g.op("Add", center, support), c(0.5))), in_f)
    grid = g.op("Concat", blocks, c([block, 1], i64), axis=0)
    center, xmin, xmax = (g.op("Reshape", v, grid) for v in (center, xmin, xmax))  # (blocks, block, 1)
    first = g.op("Slice", xmin, c([0], i64), c([1], i64), c([1], i64))  # (blocks, 1, 1): windows rise with x
    last = g.op("Slice", xmax, c([-1], i64), c([block], i64), c([1], i64))
    span = g.op("Reshape", g.op("ReduceMax", g.i64(g.op("Sub", last, first))), c([], i64))  # L, a scalar
    if short_span:
        span = g.op("Sub", span, c(1, i64))
    i = g.op("Add", first, g.f64(g.op("Range", c(0, i64), span, c(1, i64))))  # (blocks, 1, L)
    arg = g.op("Mul", g.op("Add", g.op("Sub", i, center), c(0.5)), ss)  # (x + xmin - center + 0.5) * ss
    w = _filter_nodes(g, interpolation, arg, cubic_a=cubic_a)
    w = g.where(g.op("And", g.op("GreaterOrEqual", i, xmin), g.op("Less", i, xmax)), w, c(0.0))
    # the weight sum in tap order, as the C loop adds (the zeros before and after the window change nothing)
    total = g.op("Slice", g.op("CumSum", w, c(2, i64)), c([-1], i64), c([2**62], i64), c([2], i64))
    k = g.where(g.op("Equal", total, c(0.0)), w, g.op("Div", w, total))
    # (int)(k * 2**22 + 0.5) for k >= 0, (int)(k * 2**22 - 0.5) below (truncated toward zero), times 2**-22
    t = g.op("Mul", k, c(float(1 << PRECISION_BITS)))
    scaled_sign = g.op("Mul", g.op("Sign", t), c(2.0 ** -PRECISION_BITS))
    kk = g.op("Mul", g.op("Floor", g.op("Add", g.op("Abs", t), c(0.5))), scaled_sign)
    index = g.i64(g.op("Squeeze", g.op("Min", i, g.op("Sub", in_f, c([1.0]))), c([1], i64)))
    return kk, index


def apply_pass(
    g: GraphBuilder, x: str, kk: str, index: str, count: str, *, cast: bool = True, rounding: str | None = "Floor",
) -> str:
    """One resize pass on ``x`` of shape ``(inputs, R)``: its ``(count, R)`` outputs.

    Gathers each block's span of input rows (whole contiguous rows of ``R``
    values; ``cast`` widens uint8 ``x`` after the gather) and multiplies it by
    the block's coefficients: a batched ``(block, L) x (L, R)`` float64
    product, exact in any order because every product and partial sum is an
    integer times 2**-22 whose integer part stays far below 2**53
    (``255 * L * 2**23``). The sums ``ss * 2**-22`` are rounded to uint8 as
    Pillow does (:func:`fixed_point_round`), or left as they are with
    ``rounding=None``.
    """
    c = g.const
    spans = g.op("Gather", x, index, axis=0)  # (blocks, L, R)
    if cast:  # uint8 pixels: gather the bytes, then widen only what is read
        spans = g.f64(spans)
    sums = g.op("Flatten", g.op("MatMul", kk, spans), axis=2)  # (blocks * block, R)
    if rounding is not None:
        sums = fixed_point_round(g, sums, rounding=rounding)  # before the slice: it copies bytes, not doubles
    return g.op("Slice", sums, c([0], np.int64), count, c([0], np.int64))


def fixed_point_round(g: GraphBuilder, s: str, *, rounding: str = "Floor") -> str:
    """Pillow's ``clip8((2**21 + ss) >> 22)``, given ``s = ss * 2**-22`` (exact: a power of two): uint8."""
    from onnx import TensorProto

    c = g.const
    return g.op("Cast", g.op("Clip", g.op(rounding, g.op("Add", s, c(0.5))), c(0.0), c(255.0)), to=TensorProto.UINT8)


def two_passes(g: GraphBuilder, rgb: str, channels: int, vertical: tuple[str, str, str],
               horizontal: tuple[str, str, str], order: str, *, rounding: str = "Floor", one_pass: bool = False) -> "onnx.GraphProto":
    """Both passes over uint8 ``rgb`` (N, C, h, w) in one ``order`` (``"vertical_first"`` or
    ``"horizontal_first"``), as a subgraph of ``g`` whose output is uint8 (N, C, oh, ow). ``vertical`` and
    ``horizontal`` are each pass's coefficients, source indices and output count (:func:`resize_coefficients`).
    Each pass gathers whole rows along the axis it resizes, so that axis goes first: (h or w, the rest), uint8
    between the passes (``one_pass``: not rounded between them, a planted fault)."""
    c, i64 = g.const, np.int64
    sub = g.sub()
    dims = sub.op("Shape", rgb)
    planes = sub.op("Mul", sub.op("Slice", dims, c([0], i64), c([1], i64)), c([channels], i64))  # N * C
    first, second = vertical, horizontal
    if order == "vertical_first":
        x = sub.op("Transpose", rgb, perm=[2, 0, 1, 3])  # (h, N, 3, w): whole rows move
    else:
        first, second = second, first
        x = sub.op("Transpose", rgb, perm=[3, 0, 1, 2])  # (w, N, 3, h)
    x = apply_pass(sub, sub.op("Reshape", x, c([0, -1], i64)), *first,
                   rounding=None if one_pass else rounding)  # (a, N * 3 * B)
    x = sub.op("Transpose", sub.op("Reshape", x, sub.op("Concat", first[2], planes, c([-1], i64), axis=0)),
               perm=[2, 0, 1])  # (B, a, N * 3)
    x = apply_pass(sub, sub.op("Reshape", x, c([0, -1], i64)), *second, cast=not one_pass, rounding=rounding)
    x = sub.op("Reshape", x, sub.op("Concat", second[2], first[2], planes, axis=0))  # (b, a, N * 3)
    x = sub.op("Transpose", x, perm=[2, 1, 0] if order == "vertical_first" else [2, 0, 1])  # (N * 3, oh, ow)
    out = sub.op("Reshape", x, sub.op("Concat", c([-1, channels], i64), vertical[2], horizontal[2], axis=0))
    return sub.subgraph(out, order)

