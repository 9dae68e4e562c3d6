"""fp16 headroom: how close each torch module's values come to float16's limits, on both sides.

* torch: one forward per batch with a forward hook on every module, each recording the largest
  magnitude of the module's floating-point outputs; a normalisation (:func:`_norm_rule`) also records,
  from its input, the largest squared deviation from the mean it normalises by (a square of the
  activations: what overflows first), the largest variance (mean square) and the largest sum of squares.
* ONNX Runtime: one session, one run per batch, on the graph as written (optimisations off). Every
  floating-point node output gets ``Abs -> ReduceMax`` and ``ReduceSum`` (:mod:`.probes`: the sum tells a
  NaN, which ``ReduceMax`` skips), scalars gathered into one small graph output, so no large tensor is
  fetched. A fused LayerNormalization, GroupNormalization, InstanceNormalization, RMS normalisation or
  Softmax also gets what it computes inside modelled in float32: the squared deviation and the variance
  of a normalisation, the sum of exponentials of a Softmax. The nodes are appended to the file's bytes as
  a message of their own (protobuf merges it), the weights never parsed or re-serialized.

Each ONNX value belongs to the innermost module of its node's scope (:class:`.scopes.GraphScopes`); a
node with no scope at all (a converter's Cast) to its input's producer's module; what the model's own
forward computes outside its submodules (and a file without scopes) to :data:`TOP_LEVEL`. What counts against
65,504: in an fp16 file only float16 values and what fused float16 nodes compute inside (float32 values
behind Cast nodes cannot overflow; torch's float32 values are then a reference only); in an fp32 file
every value, torch's too (a prediction before anyone converts it). Bounds: :data:`..tolerances.FP16_MAX`,
:data:`..tolerances.FP16_MIN_NORMAL`, :data:`..tolerances.FP16_HEADROOM_FACTOR`.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import OnnxParityError
from ..tolerances import FP16_HEADROOM_FACTOR, FP16_MAX, FP16_MIN_NORMAL

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

__all__ = ["TOP_LEVEL", "Headroom", "ModuleHeadroom", "Reading", "measure_headroom"]

#: the model itself: its own output (torch), the values its forward makes outside every submodule (ONNX)
TOP_LEVEL = "(top level)"
_FP16 = 10
#: reported, never judged: kernels accumulate a normalisation's sum in float32, even for float16 tensors
_INFO = {"sum of squares"}


@dataclass
class Reading:
    """One quantity of one module: its largest magnitude over the batches (``inf``/``nan`` if non-finite)."""

    what: str  # "output", or what a node computes inside: "squared deviation inside LayerNormalization"
    where: str  # "torch", or the ONNX value / node name
    op: str  # the module's class (torch) or the node's op type (ONNX)
    value: float
    counts: bool  # whether it can overflow in this file's precision
    stored: bool = True  # a tensor the graph stores (False: a quantity modelled inside a fused node)

    @property
    def label(self) -> str:
        side = "torch" if self.where == "torch" else f"ONNX {self.where!r}"
        return f"{self.what} ({side}, {self.op}): {self.value:.3g}"


@dataclass
class ModuleHeadroom:
    """One module's readings and flags (see :class:`Headroom`)."""

    name: str
    readings: list[Reading] = field(default_factory=list)
    overflow_risk: bool = False  # a counted reading within FP16_HEADROOM_FACTOR of FP16_MAX, past it, or non-finite
    overflows: bool = False  # fp16 file: a float16 value of the file reaches FP16_MAX or holds Inf / NaN
    underflow: list[str] = field(default_factory=list)  # counted readings whose whole tensor lies below 6.1e-5
    nonfinite: bool = False  # an ONNX value of the module holds Inf or NaN

    def side_max(self, torch_side: bool) -> float | None:
        """The largest magnitude of the module's outputs (torch) or of the ONNX values inside it."""
        values = [r.value for r in self.readings if (r.where == "torch") == torch_side and r.what == "output"]
        return _top(values) if values else None

    @property
    def closest(self) -> Reading | None:
        """The counted reading that came closest to float16's largest finite value."""
        counted = [r for r in self.readings if r.counts]
        return max(counted, key=lambda r: _key(r.value)) if counted else None

    def to_dict(self) -> dict[str, Any]:
        c = self.closest
        return {"torch_max": _num(self.side_max(True)), "onnx_max": _num(self.side_max(False)),
                "closest": c.label if c else None, "closest_value": _num(c.value) if c else None,
                "overflow_risk": self.overflow_risk, "overflows": self.overflows, "underflow": self.underflow,
                "nonfinite": self.nonfinite,
                "inside": {f"{r.what} ({'torch' if r.where == 'torch' else 'ONNX'})": _num(r.value)
                           for r in self.readings if r.what != "output"}}


@dataclass
class Headroom:
    """Per module (torch execution order, then ONNX-only ones), how close its values come to float16's limits.

    ``first_nonfinite``: the first ONNX node (graph order) whose value holds Inf or NaN, ``{"module", "node",
    "op", "output"}``; ``torch_first_nonfinite``: the first torch module (execution order) that yields one.
    """

    precision: str
    factor: float
    batches: list[str]
    exporter: str
    modules: dict[str, ModuleHeadroom]
    first_nonfinite: dict[str, str] | None = None
    torch_first_nonfinite: str | None = None

    def named(self, flag: str) -> list[str]:
        """Modules whose ``flag`` is set, a container left out when a flagged module inside it reached as far."""
        hit = {n: m for n, m in self.modules.items() if getattr(m, flag)}
        top = {n: _key(m.closest.value) if m.closest else -1.0 for n, m in hit.items()}
        return [n for n in hit if not any(d != n and _inside(d, n) and top[d] >= top[n] for d in hit)]

    @property
    def at_risk(self) -> list[str]:
        return self.named("overflow_risk")

    @property
    def overflowed(self) -> list[str]:
        return self.named("overflows")

    @property
    def underflowing(self) -> list[str]:
        return [n for n, m in self.modules.items() if m.underflow]

    def describe(self, name: str) -> str:
        """``name: <its closest reading>, <how far from 65504>``."""
        c = self.modules[name].closest
        if c is None:
            return name
        v = c.value
        far = ("non-finite" if not math.isfinite(v) else f"{v / FP16_MAX:.3g}x past 65504" if v >= FP16_MAX
               else f"{FP16_MAX / v:.3g}x below 65504")
        return f"{name}: {c.label} ({far})"

    def largest(self) -> str | None:
        """The module whose counted reading came closest to 65504."""
        ranked = [(n, m.closest) for n, m in self.modules.items() if m.closest is not None]
        return max(ranked, key=lambda p: _key(p[1].value))[0] if ranked else None

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "factor": self.factor, "fp16_max": FP16_MAX,
                "fp16_min_normal": FP16_MIN_NORMAL, "batches": self.batches, "exporter": self.exporter,
                "first_nonfinite": self.first_nonfinite, "torch_first_nonfinite": self.torch_first_nonfinite,
                "modules": {n: m.to_dict() for n, m in self.modules.items()}}


def measure_headroom(model: torch.nn.Module, onnx_file: Any, batches: Sequence[np.ndarray], *,
                     precision: str = "fp32", labels: Sequence[str] | None = None,
                     factor: float = FP16_HEADROOM_FACTOR, settings: Any = None) -> Headroom:
    """Each module's largest magnitudes on ``batches`` (float32 NCHW arrays, each run whole on both sides)
    against float16's limits; ``precision`` is the file's (``fp32`` or ``fp16``), ``onnx_file`` a path or
    a ``ModelProto``; ``settings``: the runtime the file's side runs on (its optimisation level turned off, so
    every probed value is computed as the graph says; Python onnxruntime on the CPU when None). Raises
    :class:`OnnxParityError` when that runtime cannot run the probed graph."""
    from .scopes import GraphScopes, load_source

    modules = dict(model.named_modules())
    source = load_source(onnx_file)
    scopes = GraphScopes(source.proto, modules)
    fp16 = precision == "fp16"
    rows: dict[str, ModuleHeadroom] = {}
    torch_first = _torch_side(model, batches, rows, counts=not fp16 or scopes.exporter == "unknown")
    first = _onnx_side(source, scopes, batches, rows, fp16, settings)
    for row in rows.values():
        _flag(row, fp16, factor)
    return Headroom(precision, factor, list(labels or [f"batch {i}" for i in range(len(batches))]),
                    scopes.exporter, rows, first, torch_first)


def _flag(row: ModuleHeadroom, fp16: bool, factor: float) -> None:
    for r in row.readings:
        if r.where != "torch" and not math.isfinite(r.value) and r.stored:
            row.nonfinite = True
        if not r.counts:
            continue
        if _key(r.value) >= FP16_MAX / factor:
            row.overflow_risk = True
        if fp16 and r.stored and r.where != "torch" and _key(r.value) >= FP16_MAX:
            row.overflows = True
        if 0 < r.value < FP16_MIN_NORMAL:
            row.underflow.append(r.label)
    if fp16 and row.nonfinite:
        row.overflows = row.overflow_risk = True


# --------------------------------------------------------------------------- torch


def _torch_side(model: torch.nn.Module, batches: Sequence[np.ndarray], rows: dict[str, ModuleHeadroom],
                counts: bool) -> str | None:
    import torch

    found: dict[tuple[str, str], list[Any]] = {}  # (module, what) -> [value, class name]
    first: list[str] = []

    def hook_for(name: str, module: torch.nn.Module) -> Any:
        rule = _norm_rule(module)

        def hook(mod: Any, args: Any, out: Any) -> None:
            values = [_absmax(t) for t in _tensors(out)]
            if values:
                v = _top(values)
                _keep(found, (name, "output"), v, type(mod).__name__)
                if not math.isfinite(v) and not first:
                    first.append(name or TOP_LEVEL)
            if rule is not None and args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
                for what, v in rule(args[0].detach().float()).items():
                    _keep(found, (name, what), v, type(mod).__name__)
        return hook

    handles = [m.register_forward_hook(hook_for(n, m)) for n, m in model.named_modules()]
    try:
        with torch.inference_mode():
            for x in batches:
                model(torch.from_numpy(x.astype("float32", copy=False)))
    finally:
        for h in handles:
            h.remove()
    for (path, what), (v, cls) in found.items():
        judged, name = counts and what not in _INFO, path or TOP_LEVEL
        rows.setdefault(name, ModuleHeadroom(name)).readings.append(Reading(what, "torch", cls, v, judged))
    return first[0] if first else None


@functools.lru_cache(maxsize=1)
def _norm_classes() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """timm's channels-first RMS norms, the other RMS norms (torch's too), timm's channels-first LayerNorms."""
    import timm.layers as tl
    from torch import nn

    def classes(*names: str, within: Any = tl) -> tuple[type, ...]:
        return tuple(c for c in (getattr(within, n, None) for n in names) if isinstance(c, type))

    return (classes("RmsNorm2d", "RmsNorm2dFp32", "SimpleNorm2d", "SimpleNorm2dFp32"),
            classes("RmsNorm", "RmsNormFp32", "SimpleNorm", "SimpleNormFp32") + classes("RMSNorm", within=nn),
            classes("LayerNorm2d", "LayerNorm2dFp32", "LayerNormAct2d", "LayerNormAct2dFp32"))


def _norm_rule(module: Any) -> Any:
    """For a normalisation: a function of its input giving the squared deviation it normalises by, else None."""
    from torch import nn

    rms2d, rms, ln2d = _norm_classes()
    if isinstance(module, rms2d):
        return lambda x: _squares(x.transpose(1, -1).flatten(0, -2), centre=False)
    if isinstance(module, ln2d):
        return lambda x: _squares(x.transpose(1, -1).flatten(0, -2), centre=True)
    if isinstance(module, (nn.LayerNorm, *rms)):
        dims = len(getattr(module, "normalized_shape", None) or getattr(module, "shape", None) or (1,))
        return lambda x: _squares(x.flatten(-dims).flatten(0, -2) if x.dim() > dims else x.reshape(1, -1),
                                  centre=isinstance(module, nn.LayerNorm))
    if isinstance(module, nn.GroupNorm):
        return lambda x: _squares(x.reshape(x.shape[0] * module.num_groups, -1), centre=True)
    if isinstance(module, nn.modules.instancenorm._InstanceNorm):
        return lambda x: _squares(x.flatten(2).flatten(0, 1), centre=True)
    return None


def _squares(rows: torch.Tensor, centre: bool) -> dict[str, float]:
    """Over each row (what one normalisation sees): the largest squared deviation, mean square and sum."""
    d = rows - rows.mean(dim=1, keepdim=True) if centre else rows
    sq = d * d
    name = "squared deviation" if centre else "square"
    return {name: _absmax(sq), "variance" if centre else "mean square": _absmax(sq.mean(dim=1)),
            "sum of squares": _absmax(sq.sum(dim=1))}


def _tensors(out: Any) -> list[Any]:
    import torch

    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() and out.numel() else []
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _tensors(o)]
    return []


def _absmax(t: torch.Tensor) -> float:
    if not t.numel():
        return 0.0
    import torch

    low, high = torch.aminmax(t.detach())  # one pass, no copy; NaN propagates
    return max(-float(low), float(high)) if not torch.isnan(high) else math.nan


def _keep(found: dict[Any, list[Any]], key: Any, value: float, cls: str) -> None:
    if key in found:
        found[key][0] = _top([found[key][0], value])
    else:
        found[key] = [value, cls]


# --------------------------------------------------------------------------- ONNX Runtime


def _onnx_side(source: Any, scopes: Any, batches: Sequence[np.ndarray], rows: dict[str, ModuleHeadroom],
               fp16: bool, settings: Any = None) -> dict[str, str] | None:
    """Probe every float value (and fused nodes' inner quantities), run each batch, file the readings."""
    import numpy as np
    import onnx

    from ..runtime.runner import RunSettings
    from ..runtime.values import run_batches
    from .probes import OUTPUT, nonfinite, probe_graph
    from .scopes import graph_input

    nodes = list(source.proto.graph.node)
    owner = _owners(nodes, scopes)
    extra, probes = probe_graph(nodes, scopes.types, _opset(source.proto), source.proto.graph.initializer)
    if not probes:
        return None
    payload = extra.SerializeToString()
    data = source.data + payload if source.data is not None else source.proto.SerializeToString() + payload
    config = {"session.disable_prepacking": "1"}
    if source.ext_dir is not None:
        config["session.model_external_initializers_file_folder_path"] = str(source.ext_dir)
    name, dtype = graph_input(source.proto)
    try:
        outs = run_batches(data, (settings or RunSettings()).at(ort_opt="disabled"), [OUTPUT], name,
                           [np.asarray(x, dtype=dtype) for x in batches], config=config)
        del data
        runs = [out[0].astype(float) for out in outs]
    except Exception as exc:
        where = settings.runtime if settings is not None else "ONNX Runtime"
        raise OnnxParityError(f"{where} could not run the file with its headroom probes: {exc}") from exc
    first: dict[str, str] | None = None
    for p in probes:
        values = [max(float(r[p.max_at]), 0.0) for r in runs]  # an empty tensor's ReduceMax is -Inf
        if p.sum_at is not None:  # a NaN reads as NaN, whatever ReduceMax made of it
            values = [math.nan if nonfinite(v, float(r[p.sum_at])) and not math.isinf(v) else v
                      for v, r in zip(values, runs)]
        v = _top(values)
        module = owner[p.node] or TOP_LEVEL
        counts = not fp16 or p.elem_type == _FP16
        rows.setdefault(module, ModuleHeadroom(module)).readings.append(
            Reading(p.what, p.where, nodes[p.node].op_type, v, counts, stored=p.sum_at is not None))
        if first is None and p.sum_at is not None and not math.isfinite(v):
            n = nodes[p.node]
            first = {"module": module, "node": n.name, "op": n.op_type, "output": p.where,
                     "type": onnx.helper.tensor_dtype_to_np_dtype(p.elem_type).name}
    return first


def _owners(nodes: list[Any], scopes: Any) -> list[str]:
    """Each node's module: its innermost scope; a node with no scope at all (one a converter added, no
    exporter's metadata or scoped name) its input's producer's; ``""``: the model's own forward."""
    from .scopes import SCOPES_KEY

    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    owner = list(scopes.module_of)
    added = [not n.name.startswith("/") and not any(p.key == SCOPES_KEY for p in n.metadata_props) for n in nodes]
    for _ in range(2):  # a chain of added nodes, written out of order, settles in a second pass
        for i, n in enumerate(nodes):
            if not owner[i] and added[i]:
                owner[i] = next((owner[producer[v]] for v in n.input if v in producer and owner[producer[v]]), "")
    return owner


def _opset(proto: Any) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)


def _top(values: Sequence[float]) -> float:
    """The largest of ``values``, NaN when any is NaN."""
    return math.nan if any(math.isnan(v) for v in values) else max(values)


def _key(v: float) -> float:
    return math.inf if math.isnan(v) else v


def _inside(child: str, parent: str) -> bool:
    return parent in ("", TOP_LEVEL) or child.startswith(parent + ".")


def _num(v: float | None) -> float | str | None:
    return v if v is None or math.isfinite(v) else ("nan" if math.isnan(v) else "inf")
