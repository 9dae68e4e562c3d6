"""timm's eval transform as an ONNX graph: a file that cannot lose its preprocessing.

:func:`preprocessing_graph` builds an ONNX model that takes decoded pixels,
uint8 ``(N, H, W, 3)`` or ``(N, H, W, 4)`` (RGBA: alpha dropped, as
``convert("RGB")`` does) of any height and width, and returns the float32
``(N, 3, h, w)`` batch that :func:`pytest_onnx_parity.preprocessing.transform.preprocess`
gives for the same pixels: the same resize size (torchvision's and timm's
rounding), Pillow's resize reproduced in fixed point (see
:mod:`pytest_onnx_parity.onnxfile.resample`), the same centre crop or pad, the
same float32 normalisation. For a 1-channel config (a model made with ``in_chans=1``) the
pixels are first turned into Pillow's ``L`` luma in its own integer arithmetic,
``(R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16``, as ``preprocess`` (and timm's
loader) convert them before the resize, and the output is ``(N, 1, h, w)``.
:func:`embed_preprocessing` puts it in front of a
model whose input is float32 NCHW; :func:`run_embedded` feeds such a file
decoded images and turns bad input into :class:`EmbeddedInputError`.

Errors the graph itself raises in ONNX Runtime (for clients that feed it
without :func:`run_embedded`): a non-uint8 tensor ("Unexpected input data
type"), a rank other than 4 ("Invalid rank"), and, through nodes whose names
are the message: ``pixels_must_have_3_or_4_channels``,
``image_has_no_pixels``, ``image_too_thin_for_crop_mode``.
"""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ..errors import ImageError, SpecError
from ..preprocessing.transform import ConfigLike, EvalTransform
from .resample import FILTERS, GraphBuilder, resize_coefficients, two_passes

if TYPE_CHECKING:  # pragma: no cover
    import onnx
    import onnxruntime

__all__ = [
    "EMBEDDED_KEY",
    "EmbeddedInputError",
    "EmbeddingError",
    "embed_preprocessing",
    "embedded_info",
    "preprocessing_graph",
]

#: Metadata key of a file whose graph starts with the preprocessing (value: JSON).
EMBEDDED_KEY = "onnx_parity.preprocessing"
LAYOUTS = ("NHWC", "NCHW")
INPUT_NAME = "pixels"
OUTPUT_NAME = "pixel_values"
#: Node names that are ONNX Runtime's error message when the check fails.
GUARDS = {
    "channels": "pixels_must_have_3_or_4_channels",
    "empty": "image_has_no_pixels",
    "thin": "image_too_thin_for_crop_mode",
}


class EmbeddingError(SpecError):
    """A model that preprocessing cannot be put in front of, or a bad layout."""


class EmbeddedInputError(ImageError):
    """Pixels that a graph with embedded preprocessing cannot take."""


SessionLike = Union[str, "os.PathLike[str]", "onnxruntime.InferenceSession"]


def preprocessing_graph(
    config: ConfigLike, *, layout: str = "NHWC", test_time: bool = False, opset: int = 18, ir_version: int = 8,
) -> "onnx.ModelProto":
    """timm's eval transform of ``config`` as an ONNX model: uint8 pixels of any size in, float32 NCHW out.

    ``config`` is what :func:`~pytest_onnx_parity.preprocessing.transform.preprocess`
    takes (a data-config dict, an ONNX path or model carrying one); with
    ``test_time=True`` its test-time size and crop apply. ``layout`` is the
    input's: ``"NHWC"`` (decoded image bytes, the default) or ``"NCHW"``;
    either way 3 (RGB) or 4 (RGBA) channels. The output has the config's channels:
    ``(N, 3, h, w)``, or ``(N, 1, h, w)`` for a 1-channel config (Pillow's integer
    luma, as ``convert("L")`` computes it, before the resize). It equals ``preprocess``
    on the same pixels (exactly before normalisation; float32 after).
    """
    transform = EvalTransform.from_config(config, test_time=test_time)
    return _build(transform, layout=layout, opset=opset, ir_version=ir_version)


def _build(
    t: EvalTransform, *, layout: str = "NHWC", opset: int = 18, ir_version: int = 8, prefix: str = "",
    input_name: str = INPUT_NAME, output_name: str = OUTPUT_NAME, fault: str | None = None,
) -> "onnx.ModelProto":
    """The graph of ``t``. ``fault`` plants a known error, for tests that must be able to fail:
    ``"cubic_a"`` (a = -0.75), ``"round"`` (round instead of Pillow's floor shift),
    ``"one_pass"`` (no uint8 rounding between the passes), ``"order"`` (the other pass first),
    ``"span"`` (each block of outputs reads one input too few)."""
    _check_embeddable(t, layout)
    g = GraphBuilder(prefix=prefix)
    h_axis, w_axis, c_axis = (1, 2, 3) if layout == "NHWC" else (2, 3, 1)
    height, width, new_h, new_w = _guarded_sizes(g, t, input_name, (h_axis, w_axis, c_axis), prefix)
    kept = _crop_windows(g, t, height, width, new_h, new_w, fault)
    rgb, kept = _read_touched_pixels(g, t, input_name, layout, (h_axis, w_axis, c_axis), kept)
    image = _resize_in_pillows_order(g, t, rgb, kept, height, width, new_h, new_w, fault)
    _pad_and_normalise(g, t, image, kept, output_name)
    return _model(g, t, layout, input_name, output_name, opset, ir_version)


def _check_embeddable(t: EvalTransform, layout: str) -> None:
    if layout not in LAYOUTS:
        raise EmbeddingError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    if t.interpolation not in FILTERS:
        raise SpecError(
            f"interpolation {t.interpolation!r} cannot be embedded (Pillow's nearest is an affine transform, not a "
            f"convolution); embeddable: {', '.join(FILTERS)}. Ship the file without embedded preprocessing."
        )


def _guarded_sizes(g: GraphBuilder, t: EvalTransform, input_name: str, axes: tuple[int, int, int],
                   prefix: str) -> tuple[str, str, str, str]:
    """The input's height and width and its resized size, behind the guards whose names are the error."""
    c, i64 = g.const, np.int64
    shape = g.op("Shape", input_name)

    def dim(axis: int) -> str:
        return g.op("Slice", shape, c([axis], i64), c([axis + 1], i64))

    height, width, channels = (dim(axis) for axis in axes)
    channels_ok = g.op("Or", g.op("Equal", channels, c([3], i64)), g.op("Equal", channels, c([4], i64)))
    height = g.guard(channels_ok, height, prefix + GUARDS["channels"])
    not_empty = g.op("And", g.op("GreaterOrEqual", height, c([1], i64)), g.op("GreaterOrEqual", width, c([1], i64)))
    height = g.guard(not_empty, height, prefix + GUARDS["empty"])

    new_h, new_w = _resized_size(g, t, height, width)
    fits = g.op("And", g.op("GreaterOrEqual", new_h, c([1], i64)), g.op("GreaterOrEqual", new_w, c([1], i64)))
    new_h = g.guard(fits, new_h, prefix + GUARDS["thin"])
    return height, width, new_h, new_w


def _crop_windows(g: GraphBuilder, t: EvalTransform, height: str, width: str, new_h: str, new_w: str,
                  fault: str | None) -> dict[str, tuple]:
    """Per axis (``"h"``, ``"w"``): the resize coefficients and source indices of the outputs the crop keeps,
    how many, and the padding before and after where the image is smaller than the target."""
    c, i64 = g.const, np.int64
    th, tw = t.input_size
    cubic_a = -0.75 if fault == "cubic_a" else -0.5
    kept = {}
    for axis, (size, new, target) in {"h": (height, new_h, th), "w": (width, new_w, tw)}.items():
        d = g.op("Sub", new, c([target], i64))
        nonneg = g.op("GreaterOrEqual", d, c([0], i64))
        start = g.where(nonneg, g.i64(g.op("Round", g.op("Div", g.f64(d), c(2.0)))), c([0], i64))
        count = g.op("Min", new, c([target], i64))
        short = g.op("Neg", g.op("Min", d, c([0], i64)))  # target - new where the image is smaller
        before = g.op("Div", short, c([2], i64))
        kk, index = resize_coefficients(g, t.interpolation, size, new, start, g.op("Add", start, count),
                                        cubic_a=cubic_a, short_span=fault == "span")
        kept[axis] = (kk, index, count, before, g.op("Sub", short, before))
    return kept


def _read_touched_pixels(g: GraphBuilder, t: EvalTransform, input_name: str, layout: str,
                         axes: tuple[int, int, int], kept: dict[str, tuple]) -> tuple[str, dict[str, tuple]]:
    """uint8 (N, C, h, w) of only the rows and columns the kept outputs touch (indices rise with the output),
    luma for a 1-channel config; ``kept`` with its indices made relative to that window."""
    c, i64 = g.const, np.int64
    h_axis, w_axis, c_axis = axes
    kv, rows, n_rows, top, bottom = kept["h"]
    kh, cols, n_cols, left, right = kept["w"]
    first_row, first_col = (g.op("Reshape", g.op("ReduceMin", ix), c([1], i64)) for ix in (rows, cols))
    last_row, last_col = (g.op("Reshape", g.op("ReduceMax", ix), c([1], i64)) for ix in (rows, cols))
    rows, cols = g.op("Sub", rows, first_row), g.op("Sub", cols, first_col)
    rgb = g.op("Slice", input_name, g.op("Concat", c([0], i64), first_row, first_col, axis=0),
               g.op("Concat", c([3], i64), g.op("Add", last_row, c([1], i64)), g.op("Add", last_col, c([1], i64)),
                    axis=0), c([c_axis, h_axis, w_axis], i64))
    if t.channels == 1:
        rgb = _luma(g, rgb, c_axis)
    if layout == "NHWC":
        rgb = g.op("Transpose", rgb, perm=[0, 3, 1, 2])  # uint8 (N, C, h, w)
    return rgb, {"h": (kv, rows, n_rows, top, bottom), "w": (kh, cols, n_cols, left, right)}


def _resize_in_pillows_order(g: GraphBuilder, t: EvalTransform, rgb: str, kept: dict[str, tuple], height: str,
                             width: str, new_h: str, new_w: str, fault: str | None) -> str:
    """The two resize passes, uint8 (N, C, oh, ow), in the order Pillow takes them.

    Pillow 13 resizes vertically first when the height shrinks by more than twice what the width shrinks
    (measured; its Resample.c picks the order). Both orders are If branches."""
    c, i64 = g.const, np.int64
    one_pass, rounding = fault == "one_pass", "Round" if fault == "round" else "Floor"
    branches = {order: two_passes(g, rgb, t.channels, kept["h"][:3], kept["w"][:3], order, rounding=rounding,
                                  one_pass=one_pass) for order in ("vertical_first", "horizontal_first")}
    shrink_h = g.op("Sub", height, new_h)
    shrink_w = g.op("Sub", width, new_w)
    vertical_first = g.op("And", g.op("Greater", shrink_h, c([0], i64)),
                          g.op("Greater", shrink_h, g.op("Mul", shrink_w, c([2], i64))))
    if fault == "order":
        vertical_first = g.op("Not", vertical_first)
    return g.op("If", g.op("Squeeze", vertical_first), then_branch=branches["vertical_first"],
                else_branch=branches["horizontal_first"])


def _pad_and_normalise(g: GraphBuilder, t: EvalTransform, image: str, kept: dict[str, tuple],
                       output_name: str) -> None:
    """The crop's padding with the config's fill, then ToTensor and Normalize in float32, as preprocess's
    lookup table computes them, into ``output_name``."""
    from onnx import TensorProto

    c, i64 = g.const, np.int64
    top, bottom = kept["h"][3:]
    left, right = kept["w"][3:]
    pads = g.op("Concat", c([0, 0], i64), top, left, c([0, 0], i64), bottom, right, axis=0)
    image = g.op("Cast", image, to=TensorProto.FLOAT)
    fill = t.fill
    if any(fill):
        fill_c = c(np.asarray(fill, np.float32).reshape(1, -1, 1, 1), np.float32)
        image = g.op("Add", g.op("Pad", g.op("Sub", image, fill_c), pads, c(0.0, np.float32)), fill_c)
    else:
        image = g.op("Pad", image, pads, c(0.0, np.float32))
    scaled = g.op("Div", image, c(255.0, np.float32))
    mean = c(np.asarray(t.mean, np.float32).reshape(1, -1, 1, 1), np.float32)
    std = c(np.asarray(t.std, np.float32).reshape(1, -1, 1, 1), np.float32)
    g.op("Div", g.op("Sub", scaled, mean), std, out=output_name)


def _model(g: GraphBuilder, t: EvalTransform, layout: str, input_name: str, output_name: str, opset: int,
           ir_version: int) -> "onnx.ModelProto":
    from onnx import TensorProto, helper

    th, tw = t.input_size
    in_shape = ["N", "H", "W", "C"] if layout == "NHWC" else ["N", "C", "H", "W"]
    graph = helper.make_graph(
        g.nodes, "timm_eval_transform",
        [helper.make_tensor_value_info(input_name, TensorProto.UINT8, in_shape)],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", t.channels, th, tw])],
        initializer=g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version,
                              producer_name="pytest-onnx-parity")
    helper.set_model_props(model, {EMBEDDED_KEY: json.dumps(_info(t, layout, input_name))})
    return model


def _luma(g: GraphBuilder, rgb: str, c_axis: int) -> str:
    """Pillow's ``convert("L")`` of uint8 RGB on ``c_axis``, in its integer arithmetic (exact in int32):
    ``(R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16``, uint8 with that axis kept, of size 1."""
    from onnx import TensorProto

    shape = [1, 1, 1, 1]
    shape[c_axis] = 3
    weights = g.const(np.asarray([19595, 38470, 7471], np.int32).reshape(shape), np.int32)
    total = g.op("ReduceSum", g.op("Mul", g.op("Cast", rgb, to=TensorProto.INT32), weights),
                 g.const([c_axis], np.int64), keepdims=1)
    luma = g.op("Div", g.op("Add", total, g.const(0x8000, np.int32)), g.const(1 << 16, np.int32))  # >= 0: floor
    return g.op("Cast", luma, to=TensorProto.UINT8)


def _resized_size(g: GraphBuilder, t: EvalTransform, height: str, width: str) -> tuple[str, str]:
    """:meth:`EvalTransform.resized_size` in the graph: (new height, new width), int64 ``[1]``."""
    c = g.const
    i64 = np.int64
    scale_h, scale_w = t.scale_size
    if t.crop_mode == "squash":
        return c([scale_h], i64), c([scale_w], i64)
    if t.crop_mode == "center" and scale_h == scale_w:
        # torchvision Resize(int): int(size * long / short), the product exact in int64, the division in float64
        short, long = g.op("Min", height, width), g.op("Max", height, width)
        new_long = g.i64(g.op("Floor", g.op("Div", g.f64(g.op("Mul", long, c([scale_h], i64))), g.f64(short))))
        portrait = g.op("LessOrEqual", width, height)
        size = c([scale_h], i64)
        return g.where(portrait, new_long, size), g.where(portrait, size, new_long)
    # timm ResizeKeepRatio: round(edge / ratio), ratio the max (border) or min (center) of edge / scale
    h_f, w_f = g.f64(height), g.f64(width)
    ratio_h = g.op("Div", h_f, c([float(scale_h)]))
    ratio_w = g.op("Div", w_f, c([float(scale_w)]))
    ratio = g.op("Max" if t.crop_mode == "border" else "Min", ratio_h, ratio_w)
    return g.i64(g.op("Round", g.op("Div", h_f, ratio))), g.i64(g.op("Round", g.op("Div", w_f, ratio)))


def _info(t: EvalTransform, layout: str, input_name: str) -> dict[str, Any]:
    return {
        "preprocessing": "embedded", "layout": layout, "input": input_name, "dtype": "uint8", "channels": [3, 4],
        "data_config": {"input_size": [t.channels, *t.input_size], "interpolation": t.interpolation, "mean": list(t.mean),
                        "std": list(t.std), "crop_pct": t.crop_pct, "crop_mode": t.crop_mode},
    }


def embedded_info(onnx_file: "str | os.PathLike[str] | onnx.ModelProto | onnxruntime.InferenceSession") -> dict[str, Any] | None:
    """The embedded-preprocessing record of a file, session or model (layout, input, data config), or None."""
    if callable(getattr(onnx_file, "metadata", None)):  # a runner (runtime/runner.py)
        raw = onnx_file.metadata().get(EMBEDDED_KEY)  # type: ignore[union-attr]
    elif hasattr(onnx_file, "get_modelmeta"):
        raw = onnx_file.get_modelmeta().custom_metadata_map.get(EMBEDDED_KEY)  # type: ignore[union-attr]
    elif getattr(onnx_file, "path", None) is not None and not isinstance(onnx_file, (str, bytes)) \
            and not hasattr(onnx_file, "graph") and not hasattr(onnx_file, "__fspath__"):
        from .io import read_metadata

        raw = read_metadata(onnx_file.path).get(EMBEDDED_KEY)  # type: ignore[union-attr]
    else:
        from .io import read_metadata

        raw = read_metadata(onnx_file).get(EMBEDDED_KEY)  # type: ignore[arg-type]
    return json.loads(raw) if raw else None


def embed_preprocessing(
    model_proto: "onnx.ModelProto", config: ConfigLike | None = None, *, layout: str = "NHWC", test_time: bool = False,
) -> "onnx.ModelProto":
    """``model_proto`` with :func:`preprocessing_graph` in front of its float32 NCHW input.

    ``config`` defaults to the data config in the model's own metadata. The
    result takes uint8 pixels (input ``pixels``, or a free variant of that
    name), keeps the model's outputs, opset, IR version and metadata, and
    adds ``onnx_parity.preprocessing`` (JSON: layout, input name, the data
    config embedded, and ``model_input``: the model's own input, now the
    preprocessing's output, where ``onnx.utils.extract_model`` cuts the model part out). The model itself is not modified.
    """
    import onnx

    if EMBEDDED_KEY in {p.key for p in model_proto.metadata_props}:
        raise EmbeddingError("this model already has its preprocessing embedded")
    graph = model_proto.graph
    initialized = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initialized]
    if len(inputs) != 1:
        raise EmbeddingError(
            f"preprocessing can be embedded in front of a model with one image input; this one has "
            f"{len(inputs)} ({', '.join(v.name for v in inputs) or 'none'})"
        )
    target = inputs[0]
    tensor = target.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    transform = EvalTransform.from_config(model_proto if config is None else config, test_time=test_time)
    if tensor.elem_type != onnx.TensorProto.FLOAT or len(dims) != 4 or dims[1] not in (transform.channels, None):
        raise EmbeddingError(
            f"input {target.name!r} is {onnx.TensorProto.DataType.Name(tensor.elem_type).lower()} of shape {dims}; "
            f"embedded preprocessing feeds float32 NCHW with {transform.channels} channel"
            f"{'s' if transform.channels > 1 else ''}, as the data config's input_size {[transform.channels, *transform.input_size]} "
            "says: pass the config the model was made for"
        )
    if dims[2:] != [None, None] and tuple(dims[2:]) != transform.input_size:
        raise EmbeddingError(
            f"the model takes {dims[2]}x{dims[3]} images but the data config makes {transform.input_size[0]}x"
            f"{transform.input_size[1]}: export at the config's size, or pass the matching config"
        )
    names = _all_names(graph)
    prefix = next(p for p in (f"preprocess{i}/" if i else "preprocess/" for i in range(1000))
                  if not any(n.startswith(p) for n in names))
    input_name = next(n for n in (INPUT_NAME, "pixels_uint8", prefix + INPUT_NAME) if n not in names)
    opset = next((o.version for o in model_proto.opset_import if o.domain in ("", "ai.onnx")), 18)
    if opset < 13:
        raise EmbeddingError(f"the model's opset {opset} is below 13, the lowest the preprocessing graph is written for")
    pre = _build(transform, layout=layout, opset=opset, ir_version=model_proto.ir_version, prefix=prefix,
                 input_name=input_name, output_name=target.name)
    out = onnx.ModelProto()
    out.CopyFrom(model_proto)
    del out.graph.node[:]
    out.graph.node.extend(list(pre.graph.node) + list(graph.node))
    out.graph.initializer.extend(pre.graph.initializer)
    kept = [v for v in graph.input if v.name != target.name]
    del out.graph.input[:]
    out.graph.input.extend([pre.graph.input[0]] + kept)
    out.graph.value_info.append(target)  # the model's input is now an intermediate value
    meta = {p.key: p.value for p in model_proto.metadata_props}
    meta[EMBEDDED_KEY] = json.dumps({**json.loads(pre.metadata_props[0].value), "model_input": target.name})
    del out.metadata_props[:]
    onnx.helper.set_model_props(out, meta)
    return out


def _all_names(graph: Any) -> set[str]:
    names = {v.name for v in list(graph.input) + list(graph.output) + list(graph.value_info)}
    names |= {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        names.add(node.name)
    return names
