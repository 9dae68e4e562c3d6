"""The file side of the ``weights`` check: the file's float tensors (initializers and ``Constant``
nodes), which of them feed the weight ops (the evidence that a file holds weights of its own),
and the model its metadata names. The matching is :mod:`.weightmatch`.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import onnx


FLOAT_TYPE_NAMES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}


def file_tensors(proto: "onnx.ModelProto") -> dict[str, "np.ndarray"]:
    """Float initializers and Constant values with two elements or more, by name."""
    from onnx import numpy_helper

    out = {}
    for t in proto.graph.initializer:
        if t.data_type in FLOAT_TYPE_NAMES and math.prod(t.dims) > 1:
            out[t.name] = numpy_helper.to_array(t)
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type in FLOAT_TYPE_NAMES and math.prod(attr.t.dims) > 1:
                    out[node.output[0]] = numpy_helper.to_array(attr.t)
    return out


WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum")


PASS_THROUGH = ("Cast", "Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten")


def weight_kernels(proto: onnx.ModelProto, files: dict[str, np.ndarray]) -> set[str]:
    """The file tensors a Conv, Gemm or MatMul computes with (through casts, transposes and reshapes).

    These are the weights of whatever network the file holds, in float. A quantized file's kernels
    come out of a ``DequantizeLinear`` (or feed an integer op), so they are not counted: no float
    kernels means no evidence about which model the file is.
    """
    producer = {out: node for node in proto.graph.node for out in node.output}
    found: set[str] = set()
    for node in proto.graph.node:
        if node.op_type not in WEIGHT_OPS:
            continue
        for value in node.input:
            for _ in range(8):  # a short chain: Cast(fp16) -> Transpose -> Reshape at most, in practice
                if value in files:
                    found.add(value)
                    break
                src = producer.get(value)
                if src is None or src.op_type not in PASS_THROUGH or not src.input:
                    break
                value = src.input[0]
    return found


def provenance_model(proto: onnx.ModelProto) -> str | None:
    """The model named by the file's own provenance metadata (plugin exports and stamped files), if any."""
    import json

    from ..onnxfile.metadata import PROVENANCE_KEY

    raw = next((p.value for p in proto.metadata_props if p.key == PROVENANCE_KEY), None)
    try:
        model = json.loads(raw).get("model") if raw else None
    except (ValueError, AttributeError):
        return None
    return model if isinstance(model, str) and model else None


def near(a: "np.ndarray", b: "np.ndarray", rtol: float, atol: float) -> "np.ndarray":
    """Element-wise: within tolerance, or the very same value (weights are data: a NaN stored in
    the model and copied into the file is the same weight; the checks of outputs never say so)."""
    import numpy as np

    with np.errstate(invalid="ignore", over="ignore"):
        return (np.abs(a - b) <= atol + rtol * np.abs(b)) | (a == b) | (np.isnan(a) & np.isnan(b))


def close(a: "np.ndarray", b: "np.ndarray", rtol: float, atol: float) -> bool:
    import numpy as np

    a = a.astype(np.float32, copy=False)  # float32 arithmetic rounds at 6e-8 relative, far below any tolerance here
    b = b.astype(np.float32, copy=False)
    return bool(np.all(near(a, b, np.float32(rtol), np.float32(atol))))


def dtype_name(a: "np.ndarray") -> str:
    return "bfloat16" if a.dtype.name in ("bfloat16", "V2") else str(a.dtype)
