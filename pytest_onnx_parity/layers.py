"""Per-layer parity: the first torch module where ONNX Runtime departs from torch.

:func:`compare_layers` runs the torch model and the ONNX file on the same input and
compares, module by module, the output of each torch module with the ONNX value
that computes it. It needs nothing but the model and the file: no export-time
bookkeeping.

Mapping, from the file alone
----------------------------
* The dynamo exporter writes ``pkg.torch.onnx.name_scopes`` into every node's
  ``metadata_props``: the module paths from the root, then the FX node name, e.g.
  ``['', 'blocks', 'blocks.7', 'blocks.7.mlp', 'blocks.7.mlp.fc1', 'linear_30']``.
* The TorchScript exporter names nodes by scope: ``/blocks/blocks.7/mlp/fc1/MatMul``
  (each part is the tail of a module path; they are resolved against the model's
  module tree).

A module's *scope* is the set of nodes under its path. Its ONNX output is the
floating-point value made inside the scope and used outside it (by a node outside
the scope, or as a graph output); when there are several, the one made last.

Which modules are compared
--------------------------
Compared: every module (but the root) that is called once in the forward, returns
one floating-point tensor, and whose scope yields a value of the same shape. What
exporters do to the graph is handled and said, never silently skipped:

* **Conv fused with its BatchNorm.** The dynamo exporter's optimizer folds the
  norm into the conv; the fused node carries the norm's scope and the conv's own
  output is gone: the norm is compared, the conv is listed in
  :attr:`LayerComparison.uncompared` as ``fused into layer1.0.bn1``. The TorchScript
  exporter folds the other way (the node carries the conv's scope, the norm has no
  node): the norm's torch output is compared against that value and the conv is
  listed the same way. Either way the row is the norm's, with the conv in
  :attr:`LayerResult.fused`.
* **Aliases.** A module whose output is another module's output (a ``Sequential``
  and its last child, a block and its final activation) maps to the same ONNX
  value; it is compared once, under the innermost module, the others are in
  :attr:`LayerResult.aliases`.
* **Identity modules** (``nn.Identity``, dropout and drop-path in eval) return their
  input and have no ONNX node: listed as uncompared, "identity in eval".
* **In-place ops** (``ReLU(inplace=True)``, ``x += shortcut``) are harmless: torch
  outputs are copied as soon as each module returns.
* **Constant folding.** A module with no node and no fusion partner (its output
  was folded into a constant, or the exporter dropped its scope) is listed as
  uncompared with that reason.

Not compared (each listed in :attr:`LayerComparison.uncompared` with its reason):
modules called more than once in one forward (shared modules), modules that return
a tuple, a dict or an integer tensor, modules never called, modules whose ONNX
value has another shape than the torch output, and every module of a file that
carries neither kind of scope (e.g. a file rewritten by a tool that drops node
names and metadata).

One pass each side
------------------
Torch: forward hooks on the modules, one forward. ONNX Runtime: the needed values
are added as graph outputs of a copy of the model and computed in ONE run
(``InferenceSession.run_with_ort_values``, CPUExecutionProvider). Asking for a value as a graph
output keeps ONNX Runtime from fusing it away; the math is the same.

Memory: the copies of the intermediate tensors (torch side and ONNX Runtime side
together) are bounded by ``memory_budget`` (default :data:`DEFAULT_MEMORY_BUDGET`).
When they would exceed it, layers are compared in chunks: one torch forward and
one ONNX Runtime run per chunk, each keeping only its chunk's tensors. Peak memory
is about that of a plain inference of each side, plus ``memory_budget``, plus one
copy of the model file (ONNX Runtime gets the file's bytes with the extra outputs
appended as a protobuf message of their own, so the weights are never parsed or
re-serialized). A chunk holds at least one layer, so one huge layer may exceed it.

Tolerance
---------
Each layer is judged against its own activation scale and against the error it
received: ``max|torch - onnx| <= atol + rms(torch activation) * max(rtol, growth *
upstream_rel)``, where ``upstream_rel`` is the largest ``max_rel_diff`` of the layers
feeding it (followed through the torch dataflow) and ``max_rel_diff`` is
``max_abs_diff / rms``. Float32 rounding differences compound along the depth; a
layer only fails when its error is large in its own scale *and* much larger than
what it was given, so the first divergence is the layer that adds the error, and
the layers after it pass unless they add errors of their own. Defaults
(:data:`DEFAULT_ATOL`, :data:`DEFAULT_RTOL`, :data:`DEFAULT_GROWTH`) are chosen from
measured clean-export errors and planted faults (see ``docs/layers.md``).
"""
from __future__ import annotations

import ast
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from .errors import OnnxFileError, OnnxParityError, ParityFailure, SpecError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import onnx
    import torch

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "DEFAULT_MEMORY_BUDGET",
    "DEFAULT_GROWTH",
    "LayerComparison",
    "LayerResult",
    "Uncompared",
    "assert_layers_close",
    "compare_layers",
    "parse_memory",
    "scale_layer_weights",
]

#: Per-layer relative tolerance (float32): a layer fails when its max abs diff exceeds
#: ``atol + rms(activation) * max(rtol, growth * upstream_rel)``. Evidence: docs/layers.md.
DEFAULT_RTOL = 1e-3
#: Absolute floor of the per-layer tolerance, for layers whose activations are ~0.
DEFAULT_ATOL = 1e-5
#: A layer may carry up to this many times the relative error of the layers feeding it.
DEFAULT_GROWTH = 10.0
#: Bytes of intermediate tensors (torch and ONNX Runtime copies together) held at once.
DEFAULT_MEMORY_BUDGET = 1 << 30

_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
_FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
_CALL_SUFFIX = re.compile(r"@\d+$")
_BLOCK = 1 << 20


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class LayerResult:
    """One compared module: its torch output against the ONNX value computing it."""

    name: str
    """Torch module path, e.g. ``blocks.7.mlp.fc1``."""
    module_type: str
    """Class name of the module, e.g. ``Linear``."""
    onnx_ops: tuple[str, ...]
    """ONNX op types of the nodes in the module's scope (and of modules fused into it)."""
    onnx_value: str
    """Name of the ONNX value compared."""
    shape: tuple[int, ...]
    max_abs_diff: float
    max_rel_diff: float
    """``max_abs_diff`` divided by the rms of the torch activation."""
    cosine: float
    """Cosine similarity of the two activations, flattened."""
    rms: float
    """Root mean square of the torch activation: the layer's scale."""
    tolerance: float
    """``atol + rtol * rms``: the most ``max_abs_diff`` may be."""
    passed: bool
    aliases: tuple[str, ...] = ()
    """Other modules whose output is this very value (outer containers, usually)."""
    fused: tuple[str, ...] = ()
    """Modules the exporter fused into this one's ONNX op (a conv into its norm)."""
    upstream_rel: float = 0.0
    """The relative error this layer received: the largest ``max_rel_diff`` of the layers feeding it."""

    @property
    def ratio(self) -> float:
        """``max_abs_diff / tolerance``: above 1 the layer fails."""
        if self.tolerance > 0:
            return self.max_abs_diff / self.tolerance
        return 0.0 if self.max_abs_diff == 0 else math.inf

    def message(self) -> str:
        """``blocks.7.mlp.fc1 (Linear): max abs diff 0.31, 4e5x its tolerance``."""
        text = (
            f"{self.name} ({self.module_type}): max abs diff {_fmt_num(self.max_abs_diff)}, "
            f"{_fmt_ratio(self.ratio)}x its tolerance"
        )
        notes = []
        if self.fused:
            notes.append("includes " + ", ".join(self.fused) + ", fused by the exporter")
        if self.aliases:
            notes.append("also the output of " + ", ".join(self.aliases))
        return text + (f" ({'; '.join(notes)})" if notes else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module_type": self.module_type,
            "onnx_ops": list(self.onnx_ops),
            "onnx_value": self.onnx_value,
            "shape": list(self.shape),
            "max_abs_diff": _json_float(self.max_abs_diff),
            "max_rel_diff": _json_float(self.max_rel_diff),
            "cosine": _json_float(self.cosine),
            "rms": _json_float(self.rms),
            "tolerance": _json_float(self.tolerance),
            "upstream_rel": _json_float(self.upstream_rel),
            "passed": self.passed,
            "aliases": list(self.aliases),
            "fused": list(self.fused),
        }


@dataclass(frozen=True)
class Uncompared:
    """A module that could not be compared, and why."""

    name: str
    module_type: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "module_type": self.module_type, "reason": self.reason}


@dataclass
class LayerComparison:
    """Per-layer comparison of a torch model and an ONNX file on one input."""

    layers: list[LayerResult]
    """Compared modules, in execution order (the order in which they return)."""
    uncompared: list[Uncompared]
    """Modules that could not be compared, each with the reason."""
    atol: float
    rtol: float
    exporter: str
    growth: float = DEFAULT_GROWTH
    """Which scope information the file carried: ``dynamo``, ``torchscript`` or ``unknown``."""
    onnx_runs: int = 1
    """``InferenceSession.run`` calls made (one per chunk)."""
    torch_forwards: int = 1
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    peak_tensor_bytes: int = 0
    """Largest total of intermediate copies (both sides) held at once."""
    input_shape: tuple[int, ...] = ()
    note: str = ""
    """Why nothing could be compared, when :attr:`layers` is empty."""

    @property
    def first_divergence(self) -> LayerResult | None:
        """The first layer, in execution order, that fails; ``None`` when all pass."""
        return next((layer for layer in self.layers if not layer.passed), None)

    @property
    def passed(self) -> bool:
        return self.first_divergence is None

    @property
    def failed(self) -> list[LayerResult]:
        return [layer for layer in self.layers if not layer.passed]

    def message(self) -> str:
        """One line: ``first divergence at NAME (Type): max abs diff X, Nx its tolerance``."""
        first = self.first_divergence
        if first is not None:
            return f"first divergence at {first.message()}"
        if not self.layers:
            return "no layer could be compared" + (f": {self.note}" if self.note else "")
        return f"no divergence across {len(self.layers)} compared layers"

    def summary(self) -> str:
        """Same as :meth:`message`."""
        return self.message()

    def table(self, *, only_failing: bool = False, max_rows: int | None = None) -> str:
        """A text table of the layers; ``max_rows`` keeps the rows around the first divergence."""
        rows = [(i, layer) for i, layer in enumerate(self.layers) if layer.passed is False or not only_failing]
        if max_rows is not None and len(rows) > max_rows:
            first = self.first_divergence
            at = next((k for k, (_, layer) in enumerate(rows) if layer is first), 0)
            start = max(0, min(at - max_rows // 4, len(rows) - max_rows))
            rows = rows[start : start + max_rows]
        head = ("#", "layer", "type", "onnx ops", "max abs diff", "rel (x rms)", "upstream", "tolerance", "x tol", "cosine", "")
        body = []
        for i, layer in rows:
            name = layer.name + (f" (+{len(layer.aliases)} alias)" if len(layer.aliases) == 1 else "")
            if len(layer.aliases) > 1:
                name += f" (+{len(layer.aliases)} aliases)"
            if layer.fused:
                name += " [fused: " + ", ".join(_tail(f, layer.name) for f in layer.fused) + "]"
            body.append(
                (
                    str(i),
                    name,
                    layer.module_type,
                    _fmt_ops(layer.onnx_ops),
                    f"{layer.max_abs_diff:.3g}",
                    f"{layer.max_rel_diff:.2g}",
                    f"{layer.upstream_rel:.2g}",
                    f"{layer.tolerance:.2g}",
                    _fmt_ratio(layer.ratio),
                    _fmt_cos(layer.cosine),
                    "ok" if layer.passed else "FAIL",
                )
            )
        widths = [max(len(r[c]) for r in [head, *body]) for c in range(len(head))]
        numeric = {0, 4, 5, 6, 7, 8, 9}
        lines = []
        for r in [head, *body]:
            cells = [r[c].rjust(widths[c]) if c in numeric else r[c].ljust(widths[c]) for c in range(len(head))]
            lines.append("  ".join(cells).rstrip())
        lines.insert(1, "-" * len(lines[0]))
        shown = len(rows)
        if shown < len(self.layers) and not only_failing:
            lines.append(f"... {len(self.layers) - shown} more layers (LayerComparison.table() shows all)")
        lines.append(
            f"{len(self.layers)} layers compared, {len(self.failed)} diverge; "
            f"{len(self.uncompared)} modules not compared; tolerance per layer: atol + rms(torch activation) "
            f"* max(rtol, growth * upstream), atol={self.atol:g}, rtol={self.rtol:g}, growth={self.growth:g}"
        )
        return "\n".join(lines)

    def uncompared_table(self) -> str:
        """The modules not compared and why, one a line."""
        if not self.uncompared:
            return "every module was compared"
        width = max(len(u.name) for u in self.uncompared)
        return "\n".join(f"{u.name.ljust(width)}  {u.module_type}: {u.reason}" for u in self.uncompared)

    def to_dict(self) -> dict[str, Any]:
        first = self.first_divergence
        return {
            "passed": self.passed,
            "first_divergence": first.name if first else None,
            "message": self.message(),
            "exporter": self.exporter,
            "atol": self.atol,
            "rtol": self.rtol,
            "growth": self.growth,
            "onnx_runs": self.onnx_runs,
            "torch_forwards": self.torch_forwards,
            "memory_budget": self.memory_budget,
            "peak_tensor_bytes": self.peak_tensor_bytes,
            "input_shape": list(self.input_shape),
            "note": self.note,
            "layers": [layer.to_dict() for layer in self.layers],
            "uncompared": [u.to_dict() for u in self.uncompared],
        }

    def __str__(self) -> str:
        return self.message() + "\n" + self.table()


# --------------------------------------------------------------------------- public API


def compare_layers(
    model: "torch.nn.Module | str",
    onnx: "str | os.PathLike[str] | onnx.ModelProto",
    inputs: "torch.Tensor | np.ndarray",
    *,
    atol: float | None = None,
    rtol: float | None = None,
    memory_budget: int | str | None = None,
    growth: float | None = None,
) -> LayerComparison:
    """Compare each torch module's output with the ONNX value that computes it.

    ``model`` is an ``nn.Module`` or a model spec (loaded with
    :func:`pytest_onnx_parity.load_model`); ``onnx`` a path or an ``onnx.ModelProto``
    made from that model by either exporter; ``inputs`` one NCHW float batch (torch
    tensor or numpy array). ``atol`` and ``rtol`` (given together or not at all)
    and ``growth`` set the per-layer tolerance
    ``atol + rms(torch activation) * max(rtol, growth * upstream_rel)``.
    ``memory_budget`` (bytes, or a string such as ``"512MiB"``) bounds the copies of
    intermediate tensors held at once; above it layers are compared in chunks.
    """
    import numpy as np
    import torch

    atol, rtol = _resolve_tolerances(atol, rtol)
    growth = DEFAULT_GROWTH if growth is None else float(growth)
    if not growth >= 1:
        raise SpecError(f"growth must be >= 1, got {growth!r}")
    budget = parse_memory(memory_budget) if memory_budget is not None else DEFAULT_MEMORY_BUDGET
    model = _resolve_model(model)
    source = _load_proto(onnx)
    proto = source.proto
    input_name, input_dtype = _graph_input(proto)

    if isinstance(inputs, np.ndarray):
        x_np = np.ascontiguousarray(inputs)
        x_torch = torch.from_numpy(x_np.copy())
    elif isinstance(inputs, torch.Tensor):
        x_torch = inputs.detach()
        x_np = x_torch.cpu().numpy()
    else:
        raise TypeError(f"inputs must be a torch tensor or a numpy array, got {type(inputs).__name__}")
    x_np = x_np.astype(input_dtype, copy=False)
    if x_np.ndim == 3:  # one CHW image
        x_np, x_torch = x_np[None], x_torch[None]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x_torch = x_torch.to(device=device, dtype=_torch_float_dtype(model))

    modules = dict(model.named_modules())
    graph = _GraphScopes(proto, modules)
    tracer = _Tracer(model, modules, graph, side_budget=max(1, budget // 2))

    was_training = model.training
    model.eval()
    try:
        results: dict[str, LayerResult] = {}
        uncompared: dict[str, Uncompared] = {}
        peak = 0
        runs = 0
        forwards = 0
        chunk_index = 0
        while True:
            captured = tracer.forward(x_torch, chunk_index)
            forwards += 1
            if chunk_index == 0:
                uncompared.update(tracer.uncompared)
            if captured:
                values = [tracer.plan[name].value for name in captured]
                onnx_out = _run_onnx(source, input_name, x_np, values, graph.types)
                runs += 1
                held = sum(a.nbytes for a in captured.values()) + sum(map(_ort_nbytes, onnx_out.values()))
                peak = max(peak, held)
                for name in list(captured):
                    expected = captured.pop(name)
                    entry = tracer.plan[name]
                    value = onnx_out.pop(entry.value)  # each comparison frees its two tensors
                    actual = value.numpy()
                    if tuple(actual.shape) != tuple(expected.shape):
                        uncompared[name] = Uncompared(
                            name,
                            entry.module_type,
                            f"shape mismatch: torch {tuple(expected.shape)}, ONNX value {entry.value!r} "
                            f"{tuple(actual.shape)}",
                        )
                        continue
                    results[name] = _compare(entry, expected, actual)
                    del expected, actual, value
                del onnx_out
            captured.clear()
            chunk_index += 1
            if chunk_index >= tracer.n_chunks:
                break
    finally:
        tracer.close()
        if was_training:
            model.train()

    layers = _judge([results[name] for name in tracer.order if name in results], tracer, atol, rtol, growth)
    order = {name: i for i, name in enumerate(modules)}
    return LayerComparison(
        layers=layers,
        uncompared=sorted(uncompared.values(), key=lambda u: order.get(u.name, 0)),
        atol=atol,
        rtol=rtol,
        growth=growth,
        exporter=graph.exporter,
        onnx_runs=runs,
        torch_forwards=forwards,
        memory_budget=budget,
        peak_tensor_bytes=peak,
        input_shape=tuple(x_np.shape),
        note=graph.note,
    )


def assert_layers_close(
    model: "torch.nn.Module | str",
    onnx: "str | os.PathLike[str] | onnx.ModelProto",
    inputs: "torch.Tensor | np.ndarray",
    *,
    atol: float | None = None,
    rtol: float | None = None,
    memory_budget: int | str | None = None,
    growth: float | None = None,
) -> LayerComparison:
    """Raise :class:`ParityFailure` naming the first diverging module; return the comparison."""
    __tracebackhide__ = True
    comparison = compare_layers(
        model, onnx, inputs, atol=atol, rtol=rtol, memory_budget=memory_budget, growth=growth
    )
    if not comparison.layers:
        raise OnnxParityError(comparison.message())
    if not comparison.passed:
        raise ParityFailure(failure_message(comparison))
    return comparison


def failure_message(comparison: LayerComparison, *, max_rows: int = 8) -> str:
    """The message of a failed per-layer check: the one line, a short table, the knob."""
    lines = [comparison.message(), ""]
    failing = comparison.failed
    lines.append(comparison.table(max_rows=max_rows))
    lines.append("")
    lines.append(
        f"{len(failing)} of {len(comparison.layers)} layers diverge. Pass atol= and rtol= "
        "(together), or growth=, to compare_layers/assert_layers_close to change the per-layer tolerance."
    )
    return "\n".join(lines)


def scale_layer_weights(
    model: "torch.nn.Module",
    onnx: "str | os.PathLike[str] | onnx.ModelProto",
    layer: str,
    factor: float = 1.05,
) -> "onnx.ModelProto":
    """A copy of the ONNX model with the weights of one torch module scaled by ``factor``.

    The fault a per-layer check must catch: the largest floating-point initializer
    used by the nodes of ``layer``'s ONNX scope is multiplied by ``factor`` (a copy is
    made when other nodes share it, so only that layer changes). When the module has
    no node of its own (the exporter fused it with its neighbour: a conv and its batch
    norm), the node using an initializer named ``<layer>.weight`` is used, else the
    scope of the sibling module just before or after it. Returns the modified ``ModelProto`` (weights loaded in memory).
    """
    import numpy as np
    import onnx as onnx_lib
    from onnx import numpy_helper

    if isinstance(onnx, onnx_lib.ModelProto):
        proto = onnx_lib.ModelProto()
        proto.CopyFrom(onnx)
    else:
        proto = onnx_lib.load(str(onnx), load_external_data=True)
    modules = dict(model.named_modules())
    if layer not in modules:
        raise OnnxParityError(f"the model has no module {layer!r}")
    graph = _GraphScopes(proto, modules)
    inits = {t.name: t for t in proto.graph.initializer}
    parent = _parent_path(layer, modules)
    siblings = [n for n in modules if n and _parent_path(n, modules) == parent]
    at = siblings.index(layer)
    by_name = [i for i, node in enumerate(proto.graph.node) if f"{layer}.weight" in node.input]
    scopes = [graph.nodes_of.get(layer, []), by_name]  # the dynamo exporter keeps a fused conv's weight name
    scopes += [graph.nodes_of.get(n, []) for n in (*siblings[max(0, at - 1) : at], *siblings[at + 1 : at + 2])]
    all_nodes = proto.graph.node
    for scope in scopes:
        weights = [
            v for i in scope for v in all_nodes[i].input
            if v in inits and inits[v].data_type in _FLOAT_TYPES and math.prod(inits[v].dims) > 1
        ]  # fmt: skip
        if weights:
            break
    else:
        raise OnnxParityError(f"no weight initializer found in the ONNX scope of {layer!r} or its neighbours")
    target = max(dict.fromkeys(weights), key=lambda v: math.prod(inits[v].dims))
    inside = set(scope)
    shared = any(target in node.input and i not in inside for i, node in enumerate(all_nodes))
    array = numpy_helper.to_array(inits[target])
    scaled = (array.astype(np.float64) * factor).astype(array.dtype)
    new_name = target
    if shared:
        new_name = f"{target}__scaled_{layer}"
        for i in scope:
            for k, v in enumerate(all_nodes[i].input):
                if v == target:
                    all_nodes[i].input[k] = new_name
        proto.graph.initializer.append(numpy_helper.from_array(scaled, new_name))
    else:
        inits[target].CopyFrom(numpy_helper.from_array(scaled, target))
    return proto


def parse_memory(value: int | float | str) -> int:
    """Bytes from ``1073741824``, ``"1GiB"``, ``"512MB"``, ``"512M"`` or ``"2e9"``."""
    if isinstance(value, bool):
        raise SpecError(f"memory budget must be a size such as 1GiB or 512MB, got {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        match = re.fullmatch(r"\s*([0-9.]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(value))
        if not match:
            raise SpecError(f"memory budget must be a size such as 1GiB or 512MB, got {value!r}")
        number, unit = float(match.group(1)), match.group(2).lower()
    units = {
        "": 1, "b": 1,
        "k": 1024, "kb": 1000, "kib": 1024,
        "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
        "g": 1024**3, "gb": 1000**3, "gib": 1024**3,
        "t": 1024**4, "tb": 1000**4, "tib": 1024**4,
    }  # fmt: skip
    if unit not in units or not math.isfinite(number) or number <= 0:
        raise SpecError(f"memory budget must be a positive size such as 1GiB or 512MB, got {value!r}")
    return max(1, int(number * units[unit]))


# --------------------------------------------------------------------------- helpers: inputs


def _resolve_tolerances(atol: float | None, rtol: float | None) -> tuple[float, float]:
    if (atol is None) != (rtol is None):
        raise SpecError(
            "give atol and rtol together or not at all "
            f"(got atol={atol!r}, rtol={rtol!r}); the defaults are atol={DEFAULT_ATOL:g}, rtol={DEFAULT_RTOL:g}"
        )
    if atol is None or rtol is None:
        return DEFAULT_ATOL, DEFAULT_RTOL
    atol, rtol = float(atol), float(rtol)
    if not (atol >= 0 and rtol >= 0):
        raise SpecError(f"atol and rtol must be >= 0, got atol={atol!r}, rtol={rtol!r}")
    return atol, rtol


def _resolve_model(model: Any) -> "torch.nn.Module":
    if isinstance(model, str):
        try:
            from .models import load_model
        except ImportError as exc:  # pragma: no cover - models.py ships with the package
            raise OnnxParityError(f"cannot load the model spec {model!r}: {exc}. Pass an nn.Module instead.") from exc
        return load_model(model)
    import torch

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module or a model spec string, got {type(model).__name__}")
    return model


def _torch_float_dtype(model: "torch.nn.Module") -> "torch.dtype":
    import torch

    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


@dataclass
class _Source:
    """The model to compare against: its graph, and how ONNX Runtime gets it."""

    proto: "onnx.ModelProto"
    data: bytes | None = None
    """The file's bytes when ONNX Runtime can take them as they are (extra outputs are appended)."""
    ext_dir: Path | None = None
    """The folder of the file's external data."""


def _load_proto(onnx_file: Any) -> _Source:
    """The graph (with in-file weights), the file's bytes, and the folder of its external data."""
    import onnx

    if isinstance(onnx_file, onnx.ModelProto):
        if _has_external_data(onnx_file):
            raise OnnxFileError(
                "this ModelProto refers to external data files whose folder is unknown; "
                "pass the path of the .onnx file instead"
            )
        return _Source(onnx_file)
    path = Path(onnx_file)
    if not path.is_file():
        raise OnnxFileError(f"ONNX file not found: {path}. Pass the path of an existing .onnx file.")
    try:
        data = path.read_bytes()
        proto = onnx.load_from_string(data)
    except Exception as exc:
        raise OnnxFileError(f"{path} is not a readable ONNX file ({type(exc).__name__}: {exc})") from exc
    if not _has_external_data(proto):
        for tensor in proto.graph.initializer:  # ONNX Runtime gets the file's bytes: drop our copy of the weights
            if tensor.data_type in _FLOAT_TYPES and math.prod(tensor.dims) > 64:
                for name in ("raw_data", "float_data", "double_data", "int32_data"):
                    tensor.ClearField(name)
        return _Source(proto, data)
    del data
    folder = path.resolve().parent
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    for tensor in proto.graph.initializer:
        # ONNX Runtime's shape inference needs small constants (shapes, axes) in the model itself
        if uses_external_data(tensor) and math.prod(tensor.dims) <= 4096:
            load_external_data_for_tensor(tensor, str(folder))
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]
    return _Source(proto, None, folder if _has_external_data(proto) else None)


def _has_external_data(proto: "onnx.ModelProto") -> bool:
    import onnx

    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


def _graph_input(proto: "onnx.ModelProto") -> tuple[str, Any]:
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


# --------------------------------------------------------------------------- mapping: ONNX side


class _GraphScopes:
    """Which ONNX nodes belong to which torch module, and the value each module yields."""

    def __init__(self, proto: "onnx.ModelProto", modules: dict[str, Any]):
        self.proto = proto
        graph = proto.graph
        nodes = list(graph.node)
        self.exporter = _detect_exporter(nodes)
        self.note = (
            "the file carries no scope information (neither the dynamo exporter's "
            f"{_SCOPES_KEY} metadata nor TorchScript-style node names such as /layer1/layer1.0/conv1/Conv)"
            if self.exporter == "unknown"
            else ""
        )
        children: dict[str, list[str]] = {}
        for name in modules:
            if name:
                parent = _parent_path(name, modules)
                children.setdefault(parent, []).append(name)
        self._children = children
        self._ts_cache: dict[tuple[str, ...], tuple[str, ...]] = {}

        chains = [self._chain(node, modules) for node in nodes]
        scope_nodes: dict[str, list[int]] = {}
        self.own_nodes: dict[str, int] = {}
        for i, chain in enumerate(chains):
            for path in chain:
                scope_nodes.setdefault(path, []).append(i)
            if chain:
                self.own_nodes[chain[-1]] = self.own_nodes.get(chain[-1], 0) + 1

        consumers: dict[str, list[int]] = {}
        for i, node in enumerate(nodes):
            for v in node.input:
                if v:
                    consumers.setdefault(v, []).append(i)
        graph_outputs = {o.name for o in graph.output}
        self.types = _value_types(proto)
        self.shapes = _value_shapes(proto)

        self.nodes_of: dict[str, list[int]] = scope_nodes
        self.value_of: dict[str, str] = {}
        self.ops_of: dict[str, tuple[str, ...]] = {}
        self.no_value_reason: dict[str, str] = {}
        for path, idx in scope_nodes.items():
            inside = set(idx)
            ops: list[str] = []
            for i in idx:
                if nodes[i].op_type not in ops:
                    ops.append(nodes[i].op_type)
            self.ops_of[path] = tuple(ops)
            candidates = []
            for i in idx:
                for v in nodes[i].output:
                    if not v:
                        continue
                    if v in graph_outputs or any(c not in inside for c in consumers.get(v, ())):
                        candidates.append((i, v))
            floats = [(i, v) for i, v in candidates if self.types.get(v, 1) in _FLOAT_TYPES]
            if floats:
                self.value_of[path] = max(floats)[1]
            elif candidates:
                self.no_value_reason[path] = "its ONNX scope yields no floating-point value"
            else:
                self.no_value_reason[path] = "no value leaves its ONNX scope"

    def _chain(self, node: Any, modules: dict[str, Any]) -> tuple[str, ...]:
        if self.exporter == "dynamo":
            for prop in node.metadata_props:
                if prop.key == _SCOPES_KEY:
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
        for child in depth_first:  # a level the exporter left out of the name
            if child.endswith("." + part):
                return child
        return None


def _detect_exporter(nodes: Sequence[Any]) -> str:
    for node in nodes:
        if any(p.key == _SCOPES_KEY for p in node.metadata_props):
            return "dynamo"
    if any(node.name.startswith("/") for node in nodes):
        return "torchscript"
    return "unknown"


def _dynamo_chain(raw: str, modules: dict[str, Any]) -> tuple[str, ...]:
    try:
        scopes = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return ()
    if not isinstance(scopes, list) or not scopes or scopes[0] != "":
        return ()  # e.g. ['_empty_nn_module_stack_from_metadata_hook', 'sym_size_int_2']
    chain = []
    for scope in scopes[1:-1]:
        path = _CALL_SUFFIX.sub("", str(scope))
        if path in modules and path not in chain:
            chain.append(path)
    return tuple(chain)


def _parent_path(name: str, modules: dict[str, Any]) -> str:
    parts = name.split(".")
    for k in range(len(parts) - 1, 0, -1):
        candidate = ".".join(parts[:k])
        if candidate in modules:
            return candidate
    return ""


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
        if not external and (t.data_type not in _FLOAT_TYPES or math.prod(t.dims) <= 64):
            g.initializer.append(t)  # shape constants and scalars: inference may need their values
        elif t.name not in declared:
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    try:
        return onnx.shape_inference.infer_shapes(light, strict_mode=False)
    except Exception:  # inference is a help, not a requirement
        return light


# --------------------------------------------------------------------------- torch side


@dataclass
class _Entry:
    name: str
    module_type: str
    value: str
    ops: tuple[str, ...]
    nbytes: int
    chunk: int
    aliases: list[str] = field(default_factory=list)
    fused: list[str] = field(default_factory=list)


class _Tracer:
    """Forward hooks on every module: the mapping decisions (first forward) and the captures."""

    def __init__(self, model: Any, modules: dict[str, Any], graph: _GraphScopes, side_budget: int):
        import weakref

        self._weakref = weakref
        self.model = model
        self.modules = modules
        self.graph = graph
        self.side_budget = side_budget
        self.plan: dict[str, _Entry] = {}
        self.order: list[str] = []
        self.sources: dict[str, tuple[list[str], bool]] = {}
        self._x: Any = None
        self.uncompared: dict[str, Uncompared] = {}
        self.n_chunks = 1
        self._calls: dict[str, int] = {}
        self._pending_fusable: set[str] = set()
        self._fused_into: dict[str, list[str]] = {}
        self._claimed: dict[str, str] = {}
        self._producer: dict[int, tuple[Any, str, int]] = {}
        self._chunk_bytes = 0
        self._chunk = 0
        self._pass = 0
        self._captured: dict[str, Any] = {}
        self._handles = [
            module.register_forward_hook(self._make_hook(name)) for name, module in modules.items() if name
        ]

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._producer.clear()

    def forward(self, x: Any, chunk: int) -> dict[str, Any]:
        import torch

        self._pass = chunk
        self._x = x
        self._captured = {}
        with torch.no_grad():
            self.model(x)
        if chunk == 0:
            self._finish_plan()
        return self._captured

    # -- hooks

    def _make_hook(self, name: str) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            if self._pass == 0:
                self._plan_call(name, module, args, output)
            elif name in self.plan and self.plan[name].chunk == self._pass and self._calls.get(name) == 1:
                self._captured[name] = _copy_out(output)

        return hook

    def _plan_call(self, name: str, module: Any, args: Any, output: Any) -> None:
        import torch

        calls = self._calls[name] = self._calls.get(name, 0) + 1
        mtype = type(module).__name__
        if calls > 1:
            return  # resolved in _finish_plan
        self.order.append(name)
        inputs = [a for a in args if isinstance(a, torch.Tensor)] if isinstance(args, tuple) else []
        producers = [p for p in (self._producer_of(t) for t in inputs) if p is not None]
        unknown = any(self._producer_of(t) is None and t is not self._x for t in inputs) or not inputs
        self.sources[name] = (producers, unknown)
        if isinstance(output, torch.Tensor):
            self._record_producer(output, name)
        graph = self.graph
        has_nodes = name in graph.nodes_of

        if graph.exporter == "unknown":
            self.uncompared[name] = Uncompared(name, mtype, "the ONNX file carries no scope information")
            return
        if not isinstance(output, torch.Tensor):
            self.uncompared[name] = Uncompared(name, mtype, f"returns {type(output).__name__}, not one tensor")
            return
        if not output.is_floating_point():
            self.uncompared[name] = Uncompared(name, mtype, f"returns a {output.dtype} tensor, not floating point")
            return

        # dynamo: a conv without nodes of its own was fused into the norm after it (this module)
        if has_nodes:
            for p in producers:
                if p in self._pending_fusable:
                    self._pending_fusable.discard(p)
                    self._fused_into[name] = [*self._fused_into.get(name, []), p]
                    self.uncompared[p] = Uncompared(
                        p, type(self.modules[p]).__name__, f"fused with {name} by the exporter (compared as {name})"
                    )

        # TorchScript: a batch norm folded into the conv before it; that conv's value is the norm's output
        folded_into = None
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and graph.own_nodes.get(name, 0) == 0:
            partner = producers[0] if len(producers) == 1 and len(inputs) == 1 else None
            if partner is not None and partner in self.plan:
                entry = self.plan.pop(partner)
                self._drop_capture(partner)
                if not has_nodes:  # the norm alone: compare it against the conv's value
                    self._claimed[entry.value] = name
                    self.uncompared[partner] = Uncompared(
                        partner,
                        entry.module_type,
                        f"fused with {name} by the exporter (compared as {name})",
                    )
                    new = _Entry(name, mtype, entry.value, entry.ops, _nbytes(output), -1, list(entry.aliases))
                    new.fused.append(partner)
                    self._admit(new, output)
                    return
                folded_into = partner
                self.uncompared[partner] = Uncompared(
                    partner,
                    entry.module_type,
                    f"the exporter folded {name}'s batch norm into its ONNX op (compared as part of {name})",
                )
            elif not has_nodes:
                self.uncompared[name] = Uncompared(
                    name, mtype, "batch norm folded by the exporter into an op that is not a compared module"
                )
                return

        if not has_nodes:
            if any(output is t for t in inputs):
                self.uncompared[name] = Uncompared(name, mtype, "identity in eval mode (returns its input; no ONNX op)")
                return
            has_state = any(True for _ in module.parameters(recurse=False)) or any(
                True for _ in module.buffers(recurse=False)
            )
            if has_state:
                self._pending_fusable.add(name)
            self.uncompared[name] = Uncompared(
                name, mtype, "no ONNX node carries its scope (constant-folded, or the exporter dropped its name)"
            )
            return

        fused = self._fused_into.pop(name, []) + ([folded_into] if folded_into else [])
        value = graph.value_of.get(name)
        if value is None:
            self.uncompared[name] = Uncompared(name, mtype, graph.no_value_reason.get(name, "no ONNX value"))
            return
        owner = self._claimed.get(value)
        if owner is not None:
            if owner in self.plan:
                self.plan[owner].aliases.append(name)
                self.plan[owner].fused.extend(fused)
            else:
                self.uncompared[name] = Uncompared(name, mtype, f"same ONNX value as {owner}, which is not compared")
            return
        static = graph.shapes.get(value)
        if static is not None and not _shape_fits(static, tuple(output.shape)):
            self.uncompared[name] = Uncompared(
                name,
                mtype,
                f"shape mismatch: torch {tuple(output.shape)}, ONNX value {value!r} "
                f"{tuple('?' if d is None else d for d in static)}",
            )
            return
        self._claimed[value] = name
        entry = _Entry(name, mtype, value, graph.ops_of.get(name, ()), _nbytes(output), -1, fused=fused)
        self._admit(entry, output)

    def _admit(self, entry: _Entry, output: Any) -> None:
        """Put a module in the plan; copy its output now when the first chunk has room."""
        self.plan[entry.name] = entry
        self.uncompared.pop(entry.name, None)
        if self._chunk == 0 and (not self._captured or self._chunk_bytes + entry.nbytes <= self.side_budget):
            entry.chunk = 0
            self._captured[entry.name] = _copy_out(output)
            self._chunk_bytes += entry.nbytes
        else:
            self._chunk = 1  # the first chunk is full: everything after it waits

    def _drop_capture(self, name: str) -> None:
        array = self._captured.pop(name, None)
        if array is not None:
            self._chunk_bytes -= array.nbytes

    def _finish_plan(self) -> None:
        for name, calls in self._calls.items():
            if calls > 1:
                self.plan.pop(name, None)
                self._drop_capture(name)
                self.uncompared[name] = Uncompared(
                    name,
                    type(self.modules[name]).__name__,
                    f"called {calls} times in one forward (a shared module); its calls cannot be told apart",
                )
        for name, module in self.modules.items():
            if name and name not in self._calls:
                self.uncompared[name] = Uncompared(name, type(module).__name__, "not called in the forward")
        # chunks after the first: greedy, in execution order
        chunk, used = 0, 0
        for name in self.order:
            entry = self.plan.get(name)
            if entry is None or entry.chunk == 0:
                continue
            if chunk == 0 or (used and used + entry.nbytes > self.side_budget):
                chunk, used = chunk + 1, 0
            entry.chunk = chunk
            used += entry.nbytes
        self.n_chunks = chunk + 1
        self._producer.clear()

    # -- dataflow between modules

    def _producer_of(self, tensor: Any) -> str | None:
        """The innermost module whose output this very tensor is, unless changed in place since."""
        found = self._producer.get(id(tensor))
        if found is None or found[0]() is not tensor or found[2] != tensor._version:
            return None  # another tensor, or modified in place by a functional op (``x += shortcut``)
        return found[1]

    def _record_producer(self, tensor: Any, name: str) -> None:
        previous = self._producer_of(tensor)
        if previous is not None and previous.startswith(name + "."):
            return  # a container returning its child's output: keep the innermost producer
        self._producer[id(tensor)] = (self._weakref.ref(tensor), name, tensor._version)


def _copy_out(tensor: Any) -> "np.ndarray":
    """A float32, contiguous, CPU copy (the module's output may be changed in place later)."""
    import numpy as np
    import torch

    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.to("cpu")
    if t.dtype != torch.float32:
        t = t.float()
    # numpy's copy: one plain memcpy, where torch's clone may wait on its thread pool
    return np.array(t.numpy(), dtype=np.float32, order="C", copy=True)


def _nbytes(tensor: Any) -> int:
    return int(tensor.numel()) * 4


def _shape_fits(static: tuple[Any, ...], actual: tuple[int, ...]) -> bool:
    if len(static) != len(actual):
        return False
    return all(s is None or s == 0 or s == a for s, a in zip(static, actual))


# --------------------------------------------------------------------------- ONNX Runtime side


def _run_onnx(
    source: _Source,
    input_name: str,
    x: "np.ndarray",
    values: Iterable[str],
    types: dict[str, int],
) -> dict[str, "np.ndarray"]:
    """One ``InferenceSession.run`` computing ``values`` (added as graph outputs of a copy)."""
    import onnx
    import onnxruntime as ort

    wanted = list(dict.fromkeys(values))
    graph = source.proto.graph
    existing = {o.name for o in graph.output}
    extra = onnx.ModelProto()
    for v in wanted:
        if v not in existing:
            extra.graph.output.append(onnx.helper.make_tensor_value_info(v, types.get(v, onnx.TensorProto.FLOAT), None))
    if source.data is not None:
        # protobuf merges concatenated messages: the file's bytes plus a graph holding only the new outputs
        # is the model with those outputs appended, without parsing and re-serializing the weights
        data = source.data + extra.SerializeToString()
    else:
        n_outputs = len(graph.output)
        graph.output.extend(extra.graph.output)
        try:
            data = source.proto.SerializeToString()
        finally:
            del graph.output[n_outputs:]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = False  # give the intermediate buffers back as soon as they are compared
    # one run: packing weights ahead (same kernels, same results) and spinning idle threads cost more than they save
    options.add_session_config_entry("session.disable_prepacking", "1")
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if source.ext_dir is not None:
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(source.ext_dir))
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        del data
        # OrtValues, not numpy copies: each is read (and freed) when its layer is compared
        out = session.run_with_ort_values(wanted, {input_name: ort.OrtValue.ortvalue_from_numpy(x)})
    except Exception as exc:
        raise OnnxParityError(f"ONNX Runtime could not run the model with its intermediate values: {exc}") from exc
    return dict(zip(wanted, out))


def _ort_nbytes(value: Any) -> int:
    import numpy as np

    try:
        return int(np.prod(value.shape())) * 4
    except Exception:  # pragma: no cover - not a tensor
        return 0


# --------------------------------------------------------------------------- statistics


def _compare(entry: _Entry, expected: "np.ndarray", actual: "np.ndarray") -> LayerResult:
    """The statistics of one layer; :func:`_judge` sets its tolerance and verdict."""
    import numpy as np

    e = expected.reshape(-1)
    a = actual.astype(np.float32, copy=False).reshape(-1)
    if e.size == 0:
        max_abs, rms, cosine = 0.0, 0.0, 1.0
    else:
        diff = np.subtract(e, a)
        np.abs(diff, out=diff)
        max_abs = float(diff.max())  # NaN when any difference is NaN
        if math.isnan(max_abs):
            bad = np.isnan(diff)
            same = (np.isnan(e) & np.isnan(a)) | (e == a)  # NaN against NaN, inf against the same inf
            diff[bad & same] = 0.0
            diff[bad & ~same] = np.inf
            max_abs = float(diff.max())
        del diff
        ee, aa, ea = float(np.dot(e, e)), float(np.dot(a, a)), float(np.dot(e, a))  # BLAS, float32
        if not all(map(math.isfinite, (ee, aa, ea))) or ee > 1e30 or aa > 1e30:
            ee = aa = ea = 0.0
            for k in range(0, e.size, _BLOCK):  # float64, finite values only, in blocks to bound memory
                e64 = e[k : k + _BLOCK].astype(np.float64)
                a64 = a[k : k + _BLOCK].astype(np.float64)
                e64[~np.isfinite(e64)] = 0.0
                a64[~np.isfinite(a64)] = 0.0
                ee, aa, ea = ee + float(e64 @ e64), aa + float(a64 @ a64), ea + float(e64 @ a64)
        rms = math.sqrt(ee / e.size)
        cosine = ea / math.sqrt(ee * aa) if ee > 0 and aa > 0 else (1.0 if ee == aa else 0.0)
        cosine = min(1.0, max(-1.0, cosine))
    max_rel = max_abs / rms if rms > 0 else (0.0 if max_abs == 0 else math.inf)
    return LayerResult(
        name=entry.name,
        module_type=entry.module_type,
        onnx_ops=entry.ops,
        onnx_value=entry.value,
        shape=tuple(expected.shape),
        max_abs_diff=max_abs,
        max_rel_diff=max_rel,
        cosine=cosine,
        rms=rms,
        tolerance=math.nan,
        passed=False,
        aliases=tuple(entry.aliases),
        fused=tuple(entry.fused),
    )


def _judge(layers: list[LayerResult], tracer: "_Tracer", atol: float, rtol: float, growth: float) -> list[LayerResult]:
    """Tolerance and verdict of each layer, from its own scale and the error it received.

    ``tolerance = atol + rms * max(rtol, growth * upstream_rel)``: float32 rounding
    differences compound along the depth, so a layer may carry up to ``growth`` times
    the relative error of the layers that feed it. ``upstream_rel`` follows the torch
    dataflow (which module produced each input tensor); an input made outside any
    module (a functional op in a ``forward``, or changed in place by one) counts the
    largest error of the layers that finished before it; a container also counts the
    layers inside it.
    """
    import dataclasses

    row_of: dict[str, LayerResult] = {}
    for layer in layers:
        for name in (layer.name, *layer.aliases, *layer.fused):
            row_of.setdefault(name, layer)
    position = {name: i for i, name in enumerate(tracer.order)}
    rel: dict[str, float] = {layer.name: layer.max_rel_diff for layer in layers}

    def before(name: str, own: LayerResult) -> float:
        at = position.get(name, len(position))
        return max(
            (
                rel[layer.name]
                for layer in layers
                if position.get(layer.name, 0) < at and layer is not own and not layer.name.startswith(name + ".")
            ),
            default=0.0,
        )

    def received(name: str, own: LayerResult, seen: set[str]) -> float:
        if name in seen:
            return 0.0
        seen.add(name)
        producers, unknown = tracer.sources.get(name, ([], True))
        values = []
        for producer in producers:
            row = row_of.get(producer)
            if row is not None and row is not own and not row.name.startswith(name + "."):
                values.append(rel[row.name])
            else:  # passes its input on: an identity, a fusion partner of this row, a module not compared
                values.append(received(producer, own, seen))
        if unknown:
            values.append(before(name, own))
        return max(values, default=0.0)

    out = []
    for layer in layers:
        upstream = received(layer.name, layer, set())
        inner = [rel[d.name] for d in layers if d.name.startswith(layer.name + ".")]  # a container's own parts
        upstream = max([upstream, *inner])
        allowed = max(rtol, growth * upstream) if math.isfinite(upstream) else math.inf
        tolerance = atol + allowed * layer.rms
        rel[layer.name] = layer.max_rel_diff
        out.append(
            dataclasses.replace(
                layer, upstream_rel=upstream, tolerance=tolerance, passed=bool(layer.max_abs_diff <= tolerance)
            )
        )
    return out


# --------------------------------------------------------------------------- formatting


def _fmt_num(x: float) -> str:
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return f"{x:.2g}"


def _fmt_ratio(r: float) -> str:
    if math.isnan(r) or math.isinf(r):
        return "inf"
    if r < 10:
        return f"{r:.1f}".rstrip("0").rstrip(".") if r >= 0.1 else f"{r:.1g}" if r > 0 else "0"
    if r < 1000:
        return f"{r:.0f}"
    mantissa, exponent = f"{r:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _fmt_cos(c: float) -> str:
    if math.isnan(c):
        return "nan"
    if c >= 0.9999995:  # what six decimals would show as 1.000000
        return "1"
    return f"{c:.6f}"


def _fmt_ops(ops: tuple[str, ...], limit: int = 28) -> str:
    text = ",".join(ops)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _tail(name: str, relative_to: str) -> str:
    parent = relative_to.rsplit(".", 1)[0] + "." if "." in relative_to else ""
    tail = name[len(parent) :] if parent and name.startswith(parent) else name
    return name if tail.isdigit() else tail


def _json_float(x: float) -> float | str:
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return x
