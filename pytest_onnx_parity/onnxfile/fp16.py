"""float16 variants of a float32 export, and where a float16 file first overflows.

A deployment often runs a float16 or int8 file made from the float32 export. Their
error against the torch float32 model is orders of magnitude above float32's
rounding, so each precision has its own profile (:data:`~..tolerances.PRECISION_PROFILES`, the one
place its figures live) and int8 its own verdict (:func:`pytest_onnx_parity.checks.int8.int8_verdict`).
What precision a file is, and how a variant records it, is :mod:`.file_precision`; int8 is :mod:`.quantize`.

float16
-------
:func:`to_fp16` converts a float32 file made by :func:`pytest_onnx_parity.export_onnx`
(either exporter, with or without external data) with ONNX Runtime's own
``onnxruntime.transformers.float16`` converter: inputs and outputs stay float32
(``keep_io_types``), so the same float32 batch feeds it; the ops in
:data:`FP16_KEEP_FP32_OPS` (normalisations, softmax, reductions, powers and square
roots: where a sum of squares overflows 65504 or small variances underflow) stay
float32 behind Cast nodes; every other float initializer becomes float16. Why this
converter and not onnxconverter-common or a half-precision export: docs/precision.md.

The file keeps the source's ``metadata_props`` (data config, provenance) and gains
:data:`~.file_precision.PRECISION_KEY` (``"fp16"``) and :data:`~.file_precision.PRECISION_OPTIONS_KEY`
(how it was made).
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from ..tolerances import logit_rms
from .file_precision import PrecisionError, _load_source, _require_float32, _version, save_variant
from .io import external_files

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import onnx

__all__ = ["FP16_KEEP_FP32_OPS", "first_nonfinite", "rel_error", "to_fp16"]

#: Ops :func:`to_fp16` keeps in float32 by default, besides ONNX Runtime's own block list:
#: where float16 overflows (a sum of squares over 65504: LayerNorm of activations above ~256)
#: or loses the small differences a normalisation divides by. Measured effect: docs/tolerances.md.
FP16_KEEP_FP32_OPS: tuple[str, ...] = (
    "LayerNormalization", "GroupNormalization", "InstanceNormalization", "BatchNormalization",
    "Softmax", "LogSoftmax", "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp",
    "Pow", "Sqrt", "Reciprocal",
)


def to_fp16(
    src_onnx: "str | os.PathLike[str]",
    dst_onnx: "str | os.PathLike[str]",
    *,
    keep_fp32_ops: Iterable[str] = FP16_KEEP_FP32_OPS,
    keep_io_types: bool = True,
) -> Path:
    """Convert a float32 ONNX file to float16; return ``dst_onnx``.

    ``keep_io_types`` (default) keeps the graph's float32 inputs and outputs, so the
    same float32 batch feeds the float16 file. ``keep_fp32_ops`` are op types left in
    float32 (default :data:`FP16_KEEP_FP32_OPS`; ``()`` converts everything ONNX
    Runtime's converter allows). The source's metadata is kept, ``onnx_parity.precision``
    is ``"fp16"``. External data in the source gives external data in the result.
    """
    from onnxruntime.transformers import float16

    src = Path(src_onnx)
    t0 = time.perf_counter()
    proto = _load_source(src)
    _require_float32(proto, src, "fp16")
    props = {p.key: p.value for p in proto.metadata_props}
    keep = sorted(set(keep_fp32_ops))
    block = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(keep))
    try:
        converted = float16.convert_float_to_float16(proto, keep_io_types=keep_io_types, op_block_list=block,
                                                     disable_shape_infer=False)
    except Exception as exc:
        raise PrecisionError(f"float16 conversion of {src} failed: {type(exc).__name__}: {str(exc)[:300]}") from exc
    _drop_round_trips(converted.graph)
    _topological_sort(converted.graph)
    _refresh_value_info(converted)
    options = {"converter": "onnxruntime.transformers.float16", "keep_io_types": keep_io_types,
               "keep_fp32_ops": keep, "onnxruntime": _version("onnxruntime"),
               "convert_s": round(time.perf_counter() - t0, 3)}
    return save_variant(converted, dst_onnx, props, "fp16", options, external=bool(external_files(src)))


def _drop_round_trips(graph: "onnx.GraphProto") -> int:
    """Remove the converter's float32 -> float16 -> float32 Cast pairs; returns how many.

    Between two ops kept in float32 (a decomposed LayerNorm's ``Pow`` and ``ReduceMean``) the converter casts
    to float16 and straight back: the squared deviation then overflows 65504 in a value neither op computes
    in float16 (found by the fp16 headroom check). Only its own casts (named ``..._cast_to_fp16...`` and
    ``..._cast_to_fp32...``) whose float16 value nothing else reads are removed; the readers of the second
    cast read the float32 value.
    """
    import onnx

    def target(node: "onnx.NodeProto") -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None)

    readers: dict[str, list["onnx.NodeProto"]] = {}
    for node in graph.node:
        for v in node.input:
            readers.setdefault(v, []).append(node)
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    dropped: set[int] = set()
    for node in graph.node:
        if (node.op_type != "Cast" or target(node) != onnx.TensorProto.FLOAT16 or "_cast_to_fp16" not in node.name
                or node.output[0] in outputs):
            continue
        after = readers.get(node.output[0], [])
        if not after or any(m.op_type != "Cast" or target(m) != onnx.TensorProto.FLOAT or "_cast_to_fp32" not in m.name
                            or m.output[0] in outputs for m in after):
            continue
        dropped.add(id(node))
        for m in after:
            dropped.add(id(m))
            rename[m.output[0]] = node.input[0]
    if not rename:
        return 0
    kept = [n for n in graph.node if id(n) not in dropped]
    for node in kept:
        for k, v in enumerate(node.input):
            if v in rename:
                node.input[k] = rename[v]
    del graph.node[:]
    graph.node.extend(kept)
    return len(rename)


def _refresh_value_info(proto: "onnx.ModelProto") -> None:
    """Replace the converter's value_info (some entries keep a stale element type) by fresh inference."""
    import onnx

    del proto.graph.value_info[:]
    if proto.ByteSize() < 1_900_000_000:  # in-memory inference is limited by protobuf's 2 GiB
        try:
            inferred = onnx.shape_inference.infer_shapes(proto)
        except Exception:  # shapes are a convenience for other tools; ONNX Runtime infers its own
            return
        proto.graph.value_info.extend(inferred.graph.value_info)


def _topological_sort(graph: "onnx.GraphProto") -> None:
    """Order nodes so each comes after its inputs' producers, keeping the original order where it can.

    The converter appends its Cast nodes at the end; ONNX Runtime sorts on load, but the
    ONNX checker and other tools expect a sorted graph.
    """
    import heapq

    nodes = list(graph.node)
    produced = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    deps: list[set[int]] = []
    users: dict[int, list[int]] = {}
    for i, n in enumerate(nodes):
        d = {produced[v] for v in _node_inputs(n) if v in produced and produced[v] != i}
        deps.append(d)
        for j in d:
            users.setdefault(j, []).append(i)
    missing = [len(d) for d in deps]
    ready = [i for i, m in enumerate(missing) if m == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users.get(i, ()):
            missing[u] -= 1
            if missing[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):  # a cycle: leave the graph as the converter made it, ONNX Runtime will say
        return
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)


def _node_inputs(node: "onnx.NodeProto") -> list[str]:
    """A node's inputs, with the outer-scope names its subgraphs (If/Loop bodies) use."""
    names = [v for v in node.input if v]
    for attr in node.attribute:
        for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            inner = {o for n in g.node for o in n.output} | {t.name for t in g.initializer} | {i.name for i in g.input}
            names += [v for n in g.node for v in _node_inputs(n) if v not in inner]
    return names


# --------------------------------------------------------------------------- overflow


def first_nonfinite(onnx_file: "str | os.PathLike[str]", x: "np.ndarray") -> dict[str, Any] | None:
    """The first node (graph order) whose output holds Inf or NaN on ``x``, else ``None``.

    Returns ``{"node", "op", "output", "module", "nonfinite"}``; ``module`` is the torch module path
    from the node's dynamo scope metadata or its TorchScript name (``/blocks/blocks.3/norm1/...``).
    Every intermediate float value is fetched in one run: use a batch of one or two.
    """
    import numpy as np
    import onnx

    proto = onnx.shape_inference.infer_shapes(_load_source(onnx_file))
    types = {v.name: v.type.tensor_type.elem_type for v in (*proto.graph.value_info, *proto.graph.output)}
    outs = [o for n in proto.graph.node for o in n.output if types.get(o) in (1, 10, 16)]
    present = {o.name for o in proto.graph.output}
    for name in outs:
        if name not in present:
            proto.graph.output.add().CopyFrom(onnx.helper.make_empty_tensor_value_info(name))
            present.add(name)
    from ..runtime.runner import RunSettings
    from ..runtime.values import run_arrays

    names = [o.name for o in proto.graph.output]
    inits = {t.name for t in proto.graph.initializer}
    first = next(i.name for i in proto.graph.input if i.name not in inits)
    values = dict(zip(names, run_arrays(proto.SerializeToString(), RunSettings(ort_opt="disabled"), names,
                                        {first: np.asarray(x, np.float32)})))
    for node in proto.graph.node:
        for o in node.output:
            v = values.get(o)
            if v is not None and v.dtype.kind == "f" and not np.isfinite(v).all():
                return {"node": node.name, "op": node.op_type, "output": o, "module": _node_module(node),
                        "nonfinite": int((~np.isfinite(v)).sum())}
    return None


def _node_module(node: "onnx.NodeProto") -> str:
    from ..layers.scopes import innermost_scope  # the one reading of a node's scope (headroom's too)

    return innermost_scope(node) or node.name


def rel_error(expected: "np.ndarray", actual: "np.ndarray") -> float:
    """``max|actual - expected| / rms(expected)``; ``inf`` when ``actual`` has non-finite values."""
    import numpy as np

    e, a = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    if not np.isfinite(a).all():
        return math.inf
    rms = logit_rms(e)
    return float(np.abs(a - e).max()) / rms if rms > 0 else math.inf
