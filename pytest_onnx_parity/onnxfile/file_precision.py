"""What precision an ONNX file is (fp32, fp16, int8), and how a precision variant records it.

:func:`file_precision` reads the precision a file's metadata records (:data:`PRECISION_KEY`, written
by :func:`save_variant` for the variants :mod:`.fp16` and :mod:`.quantize` make), else the one its graph
shows (:func:`graph_precision`, for files converted elsewhere). The tolerance a file of that precision is
judged by is :func:`~..tolerances.logits_tolerance` with ``precision=``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..axes import PRECISIONS
from ..errors import OnnxParityError
from .io import save_onnx

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = [
    "PRECISIONS",
    "PRECISION_KEY",
    "PRECISION_OPTIONS_KEY",
    "PrecisionError",
    "file_precision",
    "graph_precision",
    "save_variant",
]

PRECISION_KEY = "onnx_parity.precision"
PRECISION_OPTIONS_KEY = "onnx_parity.precision_options"


class PrecisionError(OnnxParityError, ValueError):
    """An unknown precision, a file that cannot be converted, or a conversion that needs more input."""


def file_precision(path: "str | os.PathLike[str]") -> str:
    """The precision recorded in a file's metadata, else the one its graph shows (:func:`graph_precision`)."""
    from .io import read_metadata

    said = read_metadata(Path(path)).get(PRECISION_KEY)
    return said if said else graph_precision(path)


def graph_precision(path: "str | os.PathLike[str]") -> str:
    """The precision a file's graph shows, for files whose metadata does not say (converted elsewhere):

    ``int8`` when it quantises (a ``DequantizeLinear`` of 8-bit integers, ``QLinear*`` or ``*Integer`` ops, as
    ``onnxruntime.quantization`` writes them); else ``fp16`` when most of its float weights (by element count,
    initializers and constants) are float16, as onnxruntime's and onnxconverter-common's
    ``convert_float_to_float16`` leave a file, with ``keep_io_types`` either way; else ``fp32``.
    Read from the graph without loading external weights (their types and shapes are in the graph).
    """
    import math

    import onnx

    from .io import load_onnx_proto

    graph = load_onnx_proto(path).graph
    init = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type.startswith("QLinear") or node.op_type.endswith("Integer"):
            return "int8"
        if node.op_type == "DequantizeLinear" and node.input and node.input[0] in init \
                and init[node.input[0]].data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
            return "int8"
    counts = {onnx.TensorProto.FLOAT: 0, onnx.TensorProto.FLOAT16: 0}
    tensors = list(graph.initializer) + [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute
                                         if a.name == "value" and a.HasField("t")]
    for t in tensors:
        if t.data_type in counts:
            counts[t.data_type] += math.prod(t.dims) if t.dims else 1
    return "fp16" if counts[onnx.TensorProto.FLOAT16] > counts[onnx.TensorProto.FLOAT] else "fp32"


def _load_source(src: "str | os.PathLike[str]") -> "onnx.ModelProto":
    from .io import load_onnx_proto

    return load_onnx_proto(src, weights=True)


def _require_float32(proto: "onnx.ModelProto", src: Path, target: str) -> None:
    props = {p.key: p.value for p in proto.metadata_props}
    already = props.get(PRECISION_KEY)
    if already and already != "fp32":
        raise PrecisionError(f"{src} is already a {already} file; convert the float32 export to {target} instead")
    floats = [t for t in proto.graph.initializer if t.data_type == 1]
    if not floats:
        raise PrecisionError(f"{src} has no float32 weights to convert to {target}: pass the float32 export")


def save_variant(proto: "onnx.ModelProto", dst: "str | os.PathLike[str]", source_props: Mapping[str, str],
                 precision: str, options: Mapping[str, Any], *, external: bool = False) -> Path:
    """Write ``proto`` to ``dst`` atomically with ``source_props`` plus the precision entries."""
    props = dict(source_props)
    props[PRECISION_KEY] = precision
    props[PRECISION_OPTIONS_KEY] = json.dumps(dict(options), sort_keys=True, default=str)
    del proto.metadata_props[:]
    for k, v in sorted(props.items()):
        proto.metadata_props.add(key=k, value=v)
    return save_onnx(proto, dst, external=external)


def _version(dist: str) -> str:
    import importlib.metadata as md

    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "missing"
