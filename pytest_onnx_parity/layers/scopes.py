"""Which ONNX nodes belong to which torch module, read from the file alone.

* The dynamo exporter writes ``pkg.torch.onnx.name_scopes`` into every node's
  ``metadata_props``: the module paths from the root, then the FX node name, e.g.
  ``['', 'blocks', 'blocks.7', 'blocks.7.mlp', 'blocks.7.mlp.fc1', 'linear_30']``.
* The TorchScript exporter names nodes by scope: ``/blocks/blocks.7/mlp/fc1/MatMul``
  (each part is the tail of a module path; they are resolved against the model's
  module tree).

A module's *scope* is the set of nodes under its path. Its ONNX output is the
floating-point value made inside the scope and used outside it (by a node outside
the scope, or as a graph output); when there are several, the one made last.

Also here: loading the file the way the per-layer run needs it (:func:`load_source`)
and its one graph input (:func:`graph_input`). Imports onnx only inside functions.
"""
from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import OnnxFileError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = [
    "FLOAT_TYPES",
    "SCOPES_KEY",
    "GraphScopes",
    "Source",
    "detect_exporter",
    "graph_input",
    "has_external_data",
    "innermost_scope",
    "load_source",
    "parent_path",
]

#: The node metadata key under which the dynamo exporter writes the module scopes.
SCOPES_KEY = "pkg.torch.onnx.name_scopes"
#: ONNX element types compared: FLOAT, FLOAT16, DOUBLE, BFLOAT16.
FLOAT_TYPES = {1, 10, 11, 16}
_CALL_SUFFIX = re.compile(r"@\d+$")


# --------------------------------------------------------------------------- the file


@dataclass
class Source:
    """The model to compare against: its graph, and how ONNX Runtime gets it."""

    proto: "onnx.ModelProto"
    data: bytes | None = None
    """The file's bytes when ONNX Runtime can take them as they are (extra outputs are appended)."""
    ext_dir: Path | None = None
    """The folder of the file's external data."""


def load_source(onnx_file: Any) -> Source:
    """The graph (with in-file weights), the file's bytes, and the folder of its external data.

    ``onnx_file`` is a path or an ``onnx.ModelProto`` (which must not refer to external data).
    """
    import onnx

    if isinstance(onnx_file, onnx.ModelProto):
        if has_external_data(onnx_file):
            raise OnnxFileError(
                "this ModelProto refers to external data files whose folder is unknown; "
                "pass the path of the .onnx file instead"
            )
        return Source(onnx_file)
    from ..onnxfile.io import load_onnx_bytes

    path = Path(onnx_file)
    if not path.is_file():
        raise OnnxFileError(f"ONNX file not found: {path}. Pass the path of an existing .onnx file.")
    try:
        data = path.read_bytes()
        proto = load_onnx_bytes(data, what=str(path))
    except Exception as exc:
        raise OnnxFileError(f"{path} is not a readable ONNX file ({type(exc).__name__}: {exc})") from exc
    if not has_external_data(proto):
        for tensor in proto.graph.initializer:  # ONNX Runtime gets the file's bytes: drop our copy of the weights
            if tensor.data_type in FLOAT_TYPES and math.prod(tensor.dims) > 64:
                for name in ("raw_data", "float_data", "double_data", "int32_data"):
                    tensor.ClearField(name)
        return Source(proto, data)
    del data
    folder = path.resolve().parent
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    for tensor in proto.graph.initializer:
        # ONNX Runtime's shape inference needs small constants (shapes, axes) in the model itself
        if uses_external_data(tensor) and math.prod(tensor.dims) <= 4096:
            load_external_data_for_tensor(tensor, str(folder))
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]
    return Source(proto, None, folder if has_external_data(proto) else None)


def has_external_data(proto: "onnx.ModelProto") -> bool:
    """Whether any initializer of ``proto`` lives in an external data file."""
    import onnx

    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


def graph_input(proto: "onnx.ModelProto") -> tuple[str, Any]:
    """Name and numpy dtype of the model's one input; :class:`OnnxFileError` unless there is exactly one."""
    import onnx

    inits = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise OnnxFileError(
            f"per-layer comparison needs an ONNX model with one input, this one has {len(inputs)}: "
            + ", ".join(i.name for i in inputs)
        )
    elem = inputs[0].type.tensor_type.elem_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem) if elem else None
    import numpy as np

    return inputs[0].name, (dtype if dtype is not None else np.float32)


# --------------------------------------------------------------------------- scopes


class GraphScopes:
    """Which ONNX nodes belong to which torch module, and the value each module yields.

    ``modules`` is ``dict(model.named_modules())``. After construction:
    :attr:`exporter` (``dynamo``, ``torchscript`` or ``unknown``), :attr:`note` (why
    nothing maps, for ``unknown``), :attr:`nodes_of` (module path -> node indices of
    its scope), :attr:`own_nodes` (module path -> number of nodes whose innermost
    scope it is), :attr:`value_of` (module path -> the ONNX value it yields),
    :attr:`ops_of`, :attr:`no_value_reason`, :attr:`types` and :attr:`shapes` (of
    the graph's values, where known).
    """

    def __init__(self, proto: "onnx.ModelProto", modules: dict[str, Any]):
        self.proto = proto
        nodes = list(proto.graph.node)
        self.exporter = detect_exporter(nodes)
        self.note = (
            "the file carries no scope information (neither the dynamo exporter's "
            f"{SCOPES_KEY} metadata nor TorchScript-style node names such as /layer1/layer1.0/conv1/Conv)"
            if self.exporter == "unknown"
            else ""
        )
        children: dict[str, list[str]] = {}
        for name in modules:
            if name:
                children.setdefault(parent_path(name, modules), []).append(name)
        self._children = children
        self._ts_cache: dict[tuple[str, ...], tuple[str, ...]] = {}

        self.nodes_of: dict[str, list[int]] = {}
        self.own_nodes: dict[str, int] = {}
        self.module_of: list[str] = []  # per node: its innermost module ("" outside every scope)
        for i, node in enumerate(nodes):
            chain = self._chain(node, modules)
            for path in chain:
                self.nodes_of.setdefault(path, []).append(i)
            if chain:
                self.own_nodes[chain[-1]] = self.own_nodes.get(chain[-1], 0) + 1
            self.module_of.append(chain[-1] if chain else "")
        self.types = _value_types(proto)
        self.shapes = _value_shapes(proto)
        self.value_of: dict[str, str] = {}
        self.ops_of: dict[str, tuple[str, ...]] = {}
        self.no_value_reason: dict[str, str] = {}
        self._find_values(nodes)

    def _find_values(self, nodes: list[Any]) -> None:
        """Each scope's ops, and the floating-point value it yields (made last, used outside it)."""
        consumers: dict[str, list[int]] = {}
        for i, node in enumerate(nodes):
            for v in node.input:
                if v:
                    consumers.setdefault(v, []).append(i)
        graph_outputs = {o.name for o in self.proto.graph.output}
        for path, idx in self.nodes_of.items():
            inside = set(idx)
            self.ops_of[path] = tuple(dict.fromkeys(nodes[i].op_type for i in idx))
            candidates = [
                (i, v) for i in idx for v in nodes[i].output
                if v and (v in graph_outputs or any(c not in inside for c in consumers.get(v, ())))
            ]  # fmt: skip
            floats = [(i, v) for i, v in candidates if self.types.get(v, 1) in FLOAT_TYPES]
            if floats:
                self.value_of[path] = self._dequantized(max(floats)[1], nodes, consumers)
            elif candidates:
                self.no_value_reason[path] = "its ONNX scope yields no floating-point value"
            else:
                self.no_value_reason[path] = "no value leaves its ONNX scope"

    def _dequantized(self, value: str, nodes: list[Any], consumers: dict[str, list[int]]) -> str:
        """In a QDQ file, the value the next module reads: ``DequantizeLinear(QuantizeLinear(value))`` when that
        pair is all that reads ``value``. The quantiser drops a ``Relu``/``Clip`` whose range the output's
        quantisation covers, so ``value`` itself is the unclipped op output; the dequantized value is what
        the module yields as deployed, its output's quantisation included (teacher forcing feeds torch's
        value there, so each activation's quantisation counts once: in the module that yields it)."""
        readers = consumers.get(value, [])
        if len(readers) != 1 or nodes[readers[0]].op_type != "QuantizeLinear":
            return value
        q = nodes[readers[0]]
        after = consumers.get(q.output[0], []) if q.output else []
        if len(after) != 1 or nodes[after[0]].op_type != "DequantizeLinear":
            return value
        return nodes[after[0]].output[0]

    def _chain(self, node: Any, modules: dict[str, Any]) -> tuple[str, ...]:
        """The module paths, outermost first, whose scopes hold ``node``."""
        if self.exporter == "dynamo":
            for prop in node.metadata_props:
                if prop.key == SCOPES_KEY:
                    return _dynamo_chain(prop.value, modules)
            return ()
        if self.exporter == "torchscript" and node.name.startswith("/"):
            parts = tuple(node.name.split("/")[1:-1])
            if parts not in self._ts_cache:
                self._ts_cache[parts] = self._resolve_ts(parts)
            return self._ts_cache[parts]
        return ()

    def _resolve_ts(self, parts: tuple[str, ...]) -> tuple[str, ...]:
        chain: list[str] = []
        current = ""
        for part in parts:
            found = self._match(current, part)
            if found is None:
                break
            chain.append(found)
            current = found
        return tuple(chain)

    def _match(self, parent: str, part: str) -> str | None:
        # A TorchScript scope part is the tail of the module's path: "conv1", "layer1.0", "downsample.0".
        queue = list(self._children.get(parent, ()))
        depth_first = []
        for child in queue:
            if child == part or child.endswith("." + part):
                return child
            depth_first.extend(self._children.get(child, ()))
        for child in depth_first:  # a level the exporter left out of the name ("/convs.1/Conv" under the root)
            if child == part or child.endswith("." + part):
                return child
        return None


def detect_exporter(nodes: Sequence[Any]) -> str:
    """``dynamo`` (scope metadata), ``torchscript`` (scoped node names) or ``unknown``."""
    for node in nodes:
        if any(p.key == SCOPES_KEY for p in node.metadata_props):
            return "dynamo"
    if any(node.name.startswith("/") for node in nodes):
        return "torchscript"
    return "unknown"


def parent_path(name: str, modules: dict[str, Any]) -> str:
    """The path of the innermost module in ``modules`` that contains ``name`` (``""``: the root)."""
    parts = name.split(".")
    for k in range(len(parts) - 1, 0, -1):
        candidate = ".".join(parts[:k])
        if candidate in modules:
            return candidate
    return ""


def innermost_scope(node: Any) -> str:
    """The innermost module a node's scope names, read without the model (``""`` when none): dynamo's last
    module scope, or the last scope part of a TorchScript name (``norm1`` of ``/blocks/blocks.3/norm1/Pow``,
    a tail: :class:`GraphScopes` resolves it to a full path against the model's modules)."""
    for prop in node.metadata_props:
        if prop.key == SCOPES_KEY:
            chain = _dynamo_chain(prop.value, None)
            return chain[-1] if chain else ""
    parts = [s for s in node.name.split("/") if s]
    return parts[-2] if node.name.startswith("/") and len(parts) > 1 else ""


def _dynamo_chain(raw: str, modules: dict[str, Any] | None) -> tuple[str, ...]:
    """The module paths of a dynamo scope list (each one in ``modules``, unless that is ``None``)."""
    try:
        scopes = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return ()
    if not isinstance(scopes, list) or not scopes or scopes[0] != "":
        return ()  # e.g. ['_empty_nn_module_stack_from_metadata_hook', 'sym_size_int_2']
    chain = []
    for scope in scopes[1:-1]:
        path = _CALL_SUFFIX.sub("", str(scope))
        if (modules is None or path in modules) and path not in chain:
            chain.append(path)
    return tuple(chain)


# --------------------------------------------------------------------------- value types and shapes


def _value_types(proto: "onnx.ModelProto") -> dict[str, int]:
    """Element type of each value: from value_info, else from shape inference on a light copy."""
    graph = proto.graph
    types = {}
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for t in graph.initializer:
        types[t.name] = t.data_type
    produced = [v for node in graph.node for v in node.output if v]
    if all(v in types for v in produced):
        return types
    inferred = _infer_light(proto)
    for vi in inferred.graph.value_info:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types.setdefault(vi.name, vi.type.tensor_type.elem_type)
    return types


def _value_shapes(proto: "onnx.ModelProto") -> dict[str, tuple[Any, ...]]:
    shapes = {}
    for vi in [*proto.graph.output, *proto.graph.value_info]:
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape"):
            shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
    return shapes


def _infer_light(proto: "onnx.ModelProto") -> "onnx.ModelProto":
    """Shape inference on a copy whose large initializers are declared as inputs (no data copied)."""
    import onnx

    light = onnx.ModelProto()
    light.ir_version = proto.ir_version
    light.opset_import.extend(proto.opset_import)
    light.functions.extend(proto.functions)
    g = light.graph
    g.node.extend(proto.graph.node)
    g.input.extend(proto.graph.input)
    g.output.extend(proto.graph.output)
    declared = {i.name for i in proto.graph.input}
    for t in proto.graph.initializer:
        external = t.data_location == onnx.TensorProto.EXTERNAL
        if not external and (t.data_type not in FLOAT_TYPES or math.prod(t.dims) <= 64):
            g.initializer.append(t)  # shape constants and scalars: inference may need their values
        elif t.name not in declared:
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    try:
        return onnx.shape_inference.infer_shapes(light, strict_mode=False)
    except Exception:  # inference is a help, not a requirement
        return light
