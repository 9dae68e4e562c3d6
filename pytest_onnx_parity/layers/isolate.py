"""The divergent module cut out of the file, with torch's values at its boundary.

:func:`cut_module` takes the row of a per-layer comparison (its first divergence, by
default) and returns a :class:`ModuleCut`: the ONNX nodes of that module (and of the
modules fused into its row) as a model of their own (:func:`..onnxfile.subgraph.extract_nodes`),
torch's values at its inputs and its output, and what a whole-file ONNX Runtime run gave at
the same values.

Torch's values come from one forward with hooks: a pre-hook copies the tensor arguments of
the module (of the first module of a fused row: the conv before its norm) as they go in,
before any in-place op can change them; a forward hook copies the row's output. Each
floating-point value the cut reads from outside is matched to one of those tensors by its
shape (the closest to ONNX Runtime's own value there when several fit); the value fed is
always torch's. A value torch has no tensor for (an integer shape computed outside the
module, a float made by a functional op outside it) is fed from the whole-file run, and
:attr:`ModuleCut.sources` says so for each input.

The same forward also records *anchors* for :mod:`.reduce`: the torch values at the inputs
and outputs of every compared row inside the module, each at the ONNX value the comparison
matched it to. torch and onnx are imported inside the functions.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import OnnxParityError
from ..onnxfile.subgraph import GraphPart
from .results import LayerComparison, LayerResult

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import onnx

__all__ = ["ModuleCut", "cut_module", "innermost_modules"]


@dataclass
class ModuleCut(GraphPart):
    """One module's ONNX subgraph and torch's values at its boundary."""

    module: str
    """The row's torch module path (``layer3.0.bn2``)."""
    module_type: str
    fused: tuple[str, ...]
    """Modules the exporter fused into the row (their nodes are in the cut)."""
    proto: "onnx.ModelProto"
    inputs: dict[str, "np.ndarray"]
    """The values fed at the cut's graph inputs, by ONNX name: torch's, where torch has them."""
    sources: dict[str, str]
    """Where each input's value comes from, in words."""
    outputs: dict[str, "np.ndarray"]
    """Torch's values at the cut's outputs, by ONNX name."""
    whole_file: dict[str, "np.ndarray"]
    """ONNX Runtime's values at the cut's inputs and outputs in a run of the whole file."""
    node_modules: list[str]
    """The innermost torch module of each node of the cut, in order ("" when none)."""
    file_nodes: int
    atol: float
    rtol: float
    anchors: dict[str, "np.ndarray"] = field(default_factory=dict)
    """Torch's values at ONNX values inside the cut (inputs and outputs of the compared rows in it)."""
    module_types: dict[str, str] = field(default_factory=dict)
    settings: Any = None  # the runtime it was cut on and is run on (runtime.runner.RunSettings; None: ONNX Runtime, CPU)

    def describe(self) -> str:
        """``layer3.0.bn2 (BatchNorm2d, with layer3.0.conv2 fused): 1 of 49 nodes (Conv)``."""
        fused = f", with {', '.join(self.fused)} fused" if self.fused else ""
        return (f"{self.module} ({self.module_type}{fused}): {self.nodes} of {self.file_nodes} nodes "
                f"({', '.join(self.ops)})")


def cut_module(
    model: Any,
    onnx_file: "str | os.PathLike[str] | onnx.ModelProto",
    x: Any,
    comparison: LayerComparison,
    layer: str | None = None,
    settings: Any = None,
) -> ModuleCut:
    """Cut the nodes of ``layer`` (a compared row of ``comparison``; default its first divergence)
    out of ``onnx_file`` with torch's values at their boundary, on the batch ``x`` (numpy, NCHW).

    Raises :class:`OnnxParityError` naming the fix when there is no such row or no node carries it.
    """
    from ..onnxfile.io import load_onnx_proto
    from ..onnxfile.subgraph import extract_nodes, live_nodes, range_boundary
    from .scopes import FLOAT_TYPES, GraphScopes

    row = _row(comparison, layer)
    given = hasattr(onnx_file, "SerializeToString")  # a ModelProto (compare_layers takes one too)
    path = None if given else os.fspath(onnx_file)  # type: ignore[arg-type]
    # in-file weights; external data is read by the cut for its own nodes only
    proto = onnx_file if given else load_onnx_proto(path)  # type: ignore[arg-type]
    modules = dict(model.named_modules())
    graph = GraphScopes(proto, modules)
    nodes = list(proto.graph.node)
    if layer is not None and layer != row.name:  # an outer module whose output is the row's: all of its nodes
        row = dataclasses.replace(row, name=layer, module_type=type(modules[layer]).__name__, fused=(), aliases=())
    group = (*row.fused, row.name)
    chosen = sorted({i for m in group for i in graph.nodes_of.get(m, ())})
    if not chosen:
        raise OnnxParityError(f"no ONNX node carries the scope of {row.name}, so it cannot be cut out of the file; pass "
                              "layer= a compared module whose nodes the file names (LayerComparison.layers)")
    indices = live_nodes(nodes, chosen, [row.onnx_value])
    inits = {t.name for t in proto.graph.initializer}
    reads, _ = range_boundary(nodes, indices, inits)
    reads = [v for v in reads if not _constant(nodes, v)]

    # anchors: every compared row inside the module, its input and its output, where the file has them
    inner = [r for r in comparison.layers if r.name == row.name or r.name.startswith(row.name + ".")]
    in_value = {r.name: _single_float_read(nodes, graph, r, inits, FLOAT_TYPES) for r in inner}
    captured = _torch_values(model, x, {(*r.fused, r.name)[0] for r in inner} | set(group),
                            {r.name for r in inner} | {row.name})
    wanted = [*reads, row.onnx_value] + [r.onnx_value for r in inner] + [v for v in in_value.values() if v]
    ort = _whole_file_values(proto if path is None else path, x, wanted, graph.types, settings)
    feeds, sources = _boundary_feeds(reads, graph.types, ort, captured["in"], group)
    out = captured["out"].get(row.name)
    if out is None or out.shape != ort[row.onnx_value].shape:
        raise OnnxParityError(f"torch's output of {row.name} could not be captured at the shape of ONNX value "
                              f"{row.onnx_value!r}, so the module cannot be cut out with torch's values; pass layer= "
                              "a module that returns one tensor and is called once")
    anchors = {v: feeds[v] for v in reads if sources[v].startswith("torch")}
    anchors = _inner_anchors(inner, in_value, captured, ort, anchors)
    value_info = {v: (graph.types.get(v, 1), a.shape) for v, a in feeds.items()}
    value_info[row.onnx_value] = (graph.types.get(row.onnx_value, 1), out.shape)
    cut = extract_nodes(proto, indices, [row.onnx_value], value_info=value_info, types=graph.types,
                        ext_dir=None if path is None else os.path.dirname(os.path.abspath(path)), name=row.name,
                        doc=f"the ONNX nodes of torch module {row.name} ({row.module_type}), cut by pytest-onnx-parity")
    return ModuleCut(
        module=row.name, module_type=row.module_type, fused=tuple(row.fused), proto=cut, inputs=feeds,
        sources=sources, outputs={row.onnx_value: out}, whole_file={v: ort[v] for v in [*reads, row.onnx_value]},
        node_modules=innermost_modules(cut, modules), file_nodes=len(nodes), atol=comparison.atol,
        rtol=comparison.rtol, anchors=anchors,
        module_types={m: type(modules[m]).__name__ for m in set(innermost_modules(cut, modules)) if m in modules},
        settings=settings,
    )


def _whole_file_values(proto_or_path: Any, x: Any, wanted: list[str], types: dict[str, int],
                       settings: Any) -> dict[str, "np.ndarray"]:
    """The runtime's values of ``wanted`` in one run of the whole file on ``x``, and ``x`` itself at the input."""
    import numpy as np

    from .onnx_values import run_onnx
    from .scopes import graph_input, load_source

    source = load_source(proto_or_path)
    input_name, input_dtype = graph_input(source.proto)
    x = np.ascontiguousarray(x).astype(input_dtype, copy=False)
    wanted = [v for v in dict.fromkeys(wanted) if v != input_name]
    ort = {k: v.numpy() for k, v in run_onnx(source, input_name, x, wanted, types, settings=settings).items()}
    ort[input_name] = x
    return ort


def _boundary_feeds(reads: list[str], types: dict[str, int], ort: dict[str, "np.ndarray"],
                    captured_in: dict[str, list["np.ndarray"]], group: tuple[str, ...],
                    ) -> tuple[dict[str, "np.ndarray"], dict[str, str]]:
    """The value fed at each input of the cut and where it comes from, in words: the torch argument of the
    row's modules of the same shape (the closest to the whole-file value when several fit), else the
    whole-file run's value."""
    import numpy as np

    from .scopes import FLOAT_TYPES

    feeds: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}
    candidates = [(m, k, a) for m in group for k, a in enumerate(captured_in.get(m, []))]
    for v in reads:
        dtype = _np_dtype(types.get(v, 1))
        if types.get(v, 1) in FLOAT_TYPES:
            fits = [(m, k, a) for m, k, a in candidates if a.shape == ort[v].shape]
            if fits:
                m, k, a = min(fits, key=lambda c: float(np.max(np.abs(c[2] - ort[v].astype(np.float32)), initial=0)))
                feeds[v] = a.astype(dtype)
                sources[v] = f"torch: argument {k} of {m}"
                continue
            sources[v] = f"ONNX Runtime, whole-file run (torch has no tensor of shape {ort[v].shape} going into {group[0]})"
        else:
            sources[v] = "ONNX Runtime, whole-file run (not floating point: a shape or an index)"
        feeds[v] = ort[v]
    return feeds, sources


def _inner_anchors(inner: list[LayerResult], in_value: dict[str, str | None], captured: dict[str, dict],
                   ort: dict[str, "np.ndarray"], anchors: dict[str, "np.ndarray"]) -> dict[str, "np.ndarray"]:
    """Torch's values at the outputs of the compared rows inside the module, and at the one input of those
    that read one (where ``anchors`` has no value yet), each where the shapes agree with the file's."""
    found = dict(anchors)
    for r in inner:
        got = captured["out"].get(r.name)
        if got is not None and got.shape == ort[r.onnx_value].shape:
            found[r.onnx_value] = got
        first = (*r.fused, r.name)[0]
        v = in_value.get(r.name)
        args = captured["in"].get(first, [])
        if v and len(args) == 1 and args[0].shape == ort[v].shape:
            found.setdefault(v, args[0])
    return found


def innermost_modules(proto: "onnx.ModelProto", modules: dict[str, Any]) -> list[str]:
    """The innermost torch module of each node of ``proto`` (its scope), ``""`` for a node without one."""
    from .scopes import GraphScopes

    graph = GraphScopes(proto, modules)
    best = [""] * len(proto.graph.node)
    for path, idx in graph.nodes_of.items():
        for i in idx:
            if len(path) > len(best[i]):
                best[i] = path
    return best


# --------------------------------------------------------------------------- helpers


def _row(comparison: LayerComparison, layer: str | None) -> LayerResult:
    if layer is None:
        first = comparison.first_divergence
        if first is None:
            raise OnnxParityError("the per-layer comparison placed no divergence: there is no module to cut out "
                                  "(pass layer= to cut a compared module)")
        return first
    for r in comparison.layers:
        if r.name == layer or layer in r.aliases:
            return r
    raise OnnxParityError(f"{layer!r} is not a compared layer of this comparison; pass one of its rows "
                          f"({', '.join(r.name for r in comparison.layers[:8])}, ...)")


def _constant(nodes: Sequence[Any], value: str) -> bool:
    return any(n.op_type == "Constant" and value in n.output for n in nodes)


def _single_float_read(nodes: Sequence[Any], graph: Any, row: LayerResult, inits: set[str], floats: set[int]) -> str | None:
    """The one floating-point value the nodes of ``row`` (and its fused modules) read from outside, or None."""
    from ..onnxfile.subgraph import range_boundary

    idx = sorted({i for m in (*row.fused, row.name) for i in graph.nodes_of.get(m, ())})
    reads, _ = range_boundary(nodes, idx, inits)
    reads = [v for v in reads if graph.types.get(v, 1) in floats and not _constant(nodes, v)]
    return reads[0] if len(reads) == 1 else None


def _np_dtype(elem: int) -> Any:
    import numpy as np
    import onnx

    try:
        return onnx.helper.tensor_dtype_to_np_dtype(elem)
    except (KeyError, ValueError):  # pragma: no cover - an unusual element type
        return np.float32


def _torch_values(model: Any, x: Any, inputs_of: set[str], outputs_of: set[str]) -> dict[str, dict[str, Any]]:
    """One forward: the tensor arguments of ``inputs_of`` as they go in, the outputs of ``outputs_of``
    (first call of each; float32 numpy copies)."""
    import numpy as np
    import torch

    modules = dict(model.named_modules())
    got: dict[str, dict[str, Any]] = {"in": {}, "out": {}}

    def copy(t: Any) -> Any:
        return np.array(t.detach().to("cpu", torch.float32).numpy(), dtype=np.float32, copy=True)

    def pre(name: str) -> Any:
        def hook(module: Any, args: Any) -> None:
            if name not in got["in"]:
                got["in"][name] = [copy(a) for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()]
        return hook

    def post(name: str) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            if name not in got["out"] and isinstance(output, torch.Tensor):
                got["out"][name] = copy(output)
        return hook

    handles = [modules[m].register_forward_pre_hook(pre(m)) for m in inputs_of if m in modules]
    handles += [modules[m].register_forward_hook(post(m)) for m in outputs_of if m in modules]
    param = next(iter(model.parameters()), None)
    was_training = model.training
    model.eval()
    try:
        xt = torch.from_numpy(np.ascontiguousarray(x).copy())
        if param is not None:
            xt = xt.to(device=param.device, dtype=param.dtype if param.is_floating_point() else xt.dtype)
        with torch.no_grad():
            model(xt)
    finally:
        for h in handles:
            h.remove()
        if was_training:
            model.train()
    return got
