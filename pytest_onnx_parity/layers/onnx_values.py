"""The file's side of the per-layer pass: the needed intermediate values in ONE run, on the variant's runtime.

The values are added as graph outputs of a copy of the model and computed by one run of a runner
(:func:`~..runtime.values.run_values`: ONNX Runtime's ``run_with_ort_values`` on Python onnxruntime, with
the variant's provider and level; or another runtime). Asking for a value as a graph output keeps the
runtime from fusing it away; the math is the same.

ONNX Runtime gets the file's bytes with the extra outputs appended as a protobuf
message of their own, so the weights are never parsed or re-serialized: peak memory
is one copy of the model file beyond a plain inference.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping

from ..errors import OnnxParityError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import onnx

    from ..runtime.runner import RunSettings
    from .scopes import Source

__all__ = ["ort_nbytes", "run_onnx"]


def run_onnx(
    source: "Source",
    input_name: str,
    x: "np.ndarray",
    values: Iterable[str],
    types: dict[str, int],
    forced: "Mapping[str, np.ndarray] | None" = None,
    nodes: "Iterable[int] | None" = None,
    settings: "RunSettings | None" = None,
) -> dict[str, Any]:
    """One ``InferenceSession.run`` computing ``values`` (added as graph outputs of a copy).

    ``forced`` (ONNX value -> torch's array of it): teacher forcing (:mod:`.teacher`): every node that
    reads one of these values reads torch's array instead, fed as a graph input in the value's own type;
    ``nodes`` (indices into the graph's nodes, with ``forced``): only these run (the own computations of
    the modules asked for: a chunk's forced run computes its chunk, not the graph before it).
    ``settings``: the variant's runtime (Python onnxruntime on the CPU when None): the values are that runtime's.
    Returns each value with ``.numpy()`` (an ``OrtValue`` on ONNX Runtime), by name.
    """
    wanted = list(dict.fromkeys(values))
    extra, feeds = _extra_graph(source, input_name, x, wanted, types, forced)
    data = _forced_model(source, extra, wanted, types, nodes) if forced else _with_outputs(source, extra)
    return _run_values(source, data, settings, wanted, feeds, forced=bool(forced))


def _value_info(v: str, types: dict[str, int]) -> "onnx.ValueInfoProto":
    import onnx

    return onnx.helper.make_tensor_value_info(v, types.get(v, onnx.TensorProto.FLOAT), None)


def _extra_graph(source: "Source", input_name: str, x: "np.ndarray", wanted: list[str], types: dict[str, int],
                 forced: "Mapping[str, np.ndarray] | None") -> tuple["onnx.ModelProto", dict[str, Any]]:
    """A model holding only what the run adds (the values asked for as outputs, beside the graph's own; or, with
    ``forced``, torch's arrays as inputs in each value's own type), and the run's feeds."""
    import onnx

    from .teacher import FORCED_PREFIX, forced_dtype

    extra = onnx.ModelProto()
    if not forced:  # the values asked for, beside the graph's own outputs
        existing = {o.name for o in source.proto.graph.output}
        extra.graph.output.extend(_value_info(v, types) for v in wanted if v not in existing)
    feeds = {input_name: x}
    for v, array in (forced or {}).items():
        elem = types.get(v, onnx.TensorProto.FLOAT)
        dtype = forced_dtype(elem)
        if dtype is None:
            continue
        extra.graph.input.append(onnx.helper.make_tensor_value_info(FORCED_PREFIX + v, elem, list(array.shape)))
        feeds[FORCED_PREFIX + v] = array.astype(dtype, copy=False)
    return extra, feeds


def _forced_model(source: "Source", extra: "onnx.ModelProto", wanted: list[str], types: dict[str, int],
                  nodes: "Iterable[int] | None") -> bytes:
    """The file with the readers of the forced values rewired to the new inputs, ``nodes`` only (all when None),
    and only the values asked for as outputs: the nodes kept may not compute the graph's own outputs."""
    from ..onnxfile.wire import with_nodes
    from .teacher import FORCED_PREFIX, restore, rewire

    graph = source.proto.graph
    edits = rewire(graph, [i.name[len(FORCED_PREFIX):] for i in extra.graph.input])
    try:
        # the readers changed: the file's bytes with its nodes replaced (its weights copied, never parsed)
        kept = graph.node if nodes is None else [graph.node[i] for i in sorted(set(nodes))]
        base = source.data if source.data is not None else source.proto.SerializeToString()
        return with_nodes(base, kept, extra.graph.input, [_value_info(v, types) for v in wanted], keep_outputs=False)
    finally:
        restore(graph, edits)


def _with_outputs(source: "Source", extra: "onnx.ModelProto") -> bytes:
    """The file with ``extra``'s outputs appended to its own."""
    if source.data is not None:
        # protobuf merges concatenated messages: the file's bytes plus a graph holding only the new outputs
        # is the model with those outputs appended, without parsing and re-serializing the weights
        return source.data + extra.SerializeToString()
    graph = source.proto.graph
    n_outputs = len(graph.output)
    graph.output.extend(extra.graph.output)
    try:
        return source.proto.SerializeToString()
    finally:
        del graph.output[n_outputs:]


def _run_values(source: "Source", data: bytes, settings: "RunSettings | None", wanted: list[str],
                feeds: dict[str, Any], *, forced: bool) -> dict[str, Any]:
    # give the intermediate buffers back as soon as they are compared (no arena); one run: packing weights
    # ahead (same kernels, same results) and spinning idle threads cost more than they save
    config = {"session.disable_prepacking": "1", "session.intra_op.allow_spinning": "0"}
    if source.ext_dir is not None:
        config["session.model_external_initializers_file_folder_path"] = str(source.ext_dir)
    from ..errors import VariantSkip
    from ..runtime.values import run_values

    what = "torch's values at its module boundaries (teacher forcing)" if forced else "its intermediate values"
    try:
        # OrtValues on ONNX Runtime, not numpy copies: each is read (and freed) when its layer is compared
        return run_values(data, settings, wanted, feeds, mem_arena=False, config=config)
    except VariantSkip:
        raise
    except Exception as exc:
        where = settings.runtime if settings is not None else "ONNX Runtime"
        raise OnnxParityError(f"{where} could not run the model with {what}: {exc}") from exc


def ort_nbytes(value: Any) -> int:
    """Bytes of an ``OrtValue`` read as float32 (0 for anything but a tensor)."""
    import numpy as np

    try:
        return int(np.prod(value.shape())) * 4
    except Exception:  # pragma: no cover - not a tensor
        return 0
