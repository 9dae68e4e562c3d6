"""The forms in which an exporter may legitimately write a model's weights.

Part of the ``weights`` check (:mod:`.weights`, matched in :mod:`.weightmatch`). For each weight the torch side
offers the tensors an exporter may write in its place:

* the weight itself (any shape with the same number of elements) and, for matrices and
  1x1 kernels, its transpose (a Linear exported as ``MatMul`` with W^T);
* the weight a module *computes* and passes to its convolution or Linear (timm's
  ``StdConv2d``/``ScaledStdConv2d`` standardise their kernel and scale it by a gain at
  run time; a fused qkv bias is concatenated from ``q_bias`` and ``v_bias``): exporters
  fold these constants into the file;
* a convolution (or Linear) folded with the BatchNorm that normalises *its output*:
  ``w*gamma/sqrt(var+eps)`` and ``(b-mean)*gamma/sqrt(var+eps)+beta``.

Which BatchNorm follows which convolution, and which weights a module computes, are
read off one traced forward pass at batch 1 (:func:`trace_weights`): a
``TorchFunctionMode`` sees every ``conv*``/``linear``/``batch_norm`` call with the very
tensors passed, and a BatchNorm is paired with a convolution only when its input *is*
that convolution's output. Module order alone is wrong for blocks that keep their
convolutions and norms in two lists (Res2Net's ``convs``/``bns``). When the forward
cannot run (a model that needs other inputs), pairing falls back to module order
(a BatchNorm after the last convolution with as many output channels), and the result
says so (``pairing``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

_FOLDABLE = ("Conv1d", "Conv2d", "Conv3d", "Linear")
_VIEWS = {"reshape", "view", "view_as", "reshape_as", "flatten", "squeeze", "unsqueeze", "contiguous", "clone",
          "detach", "to", "float", "type_as", "expand", "expand_as", "__get__"}
"""Operations that change a constant's shape or dtype only: matching ignores shape, so they add no form."""


@dataclass
class Form:
    """One way an exporter may write (some of) the model's weights."""

    kind: str  # raw | transposed | computed | folded
    array: "np.ndarray"  # as computed (any shape)
    covers: tuple[str, ...]
    transpose: bool = False

    @property
    def numel(self) -> int:
        return int(self.array.size)

    def at(self, idx: "np.ndarray") -> "np.ndarray":
        import numpy as np

        if not self.transpose:
            return self.array.reshape(-1)[idx]
        rows, cols = self.array.shape
        r, c = np.unravel_index(idx, (cols, rows))
        return self.array[c, r]

    def flat(self) -> "np.ndarray":
        import numpy as np

        return np.ascontiguousarray(self.array.T if self.transpose else self.array).reshape(-1)


@dataclass
class _Operand:
    """A weight or bias as a convolution received it, and the model tensors it derives from."""

    array: "np.ndarray"
    covers: tuple[str, ...]


@dataclass
class _Fold:
    conv: str
    bn: str
    weight: _Operand
    bias: _Operand | None
    mean: "np.ndarray"
    var: "np.ndarray"
    gamma: "np.ndarray | None"
    beta: "np.ndarray | None"
    eps: float
    bn_covers: dict[str, str]  # role (weight, bias, running_mean, running_var) -> model tensor name


@dataclass
class WeightTrace:
    """What one forward pass showed: computed operands and BatchNorm -> convolution pairs."""

    pairing: str  # traced | module order
    pairs: dict[str, str] = field(default_factory=dict)  # BatchNorm module -> convolution module
    computed: list[_Operand] = field(default_factory=list)
    folds: list[_Fold] = field(default_factory=list)
    reason: str = ""


def _f64(t: Any) -> "np.ndarray | None":
    """A tensor's values in float64 (norm statistics are folded in float64), or None."""
    return t.detach().cpu().double().numpy() if t is not None and hasattr(t, "detach") else None


def tracked_weights(model: "torch.nn.Module") -> dict[str, "np.ndarray"]:
    """Float parameters and BatchNorm running statistics with two elements or more."""
    out = {}
    for name, p in model.named_parameters():
        if p.is_floating_point() and p.numel() > 1:
            out[name] = p.detach().cpu().float().numpy()
    for name, b in model.named_buffers():
        if b.is_floating_point() and b.numel() > 1 and name.rsplit(".", 1)[-1] in ("running_mean", "running_var"):
            out[name] = b.detach().cpu().float().numpy()
    return out


def _order_pairs(model: "torch.nn.Module") -> dict[str, str]:
    """BatchNorm module -> the convolution (or Linear) just before it in module order with as many outputs."""
    import torch

    pairs: dict[str, str] = {}
    last: tuple[str, int] | None = None
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            if last is not None and last[1] == mod.num_features and mod.track_running_stats:
                pairs[name] = last[0]
            last = None
        elif type(mod).__name__ in _FOLDABLE or isinstance(mod, (torch.nn.Conv2d, torch.nn.Conv1d, torch.nn.Linear)):
            out = getattr(mod, "out_channels", getattr(mod, "out_features", None))
            last = (name, int(out)) if out else None
    return pairs


def trace_weights(model: "torch.nn.Module", input_size: tuple[int, ...] | None = None) -> WeightTrace:
    """Run ``model`` once at batch 1 and record the constants it computes and what its norms normalise.

    A tensor is *constant* when it is a parameter or buffer, or the result of an
    operation whose tensor arguments are all constant (what an exporter folds). Every
    floating constant computed from tracked weights is offered as a ``computed`` form
    covering them (pure reshapes excepted: matching ignores shape). Falls back to
    module-order pairing (``pairing="module order"``) when the model is in training mode
    (a forward would update its statistics) or the forward fails.
    """
    import torch
    from ..model.privates import leaves_function

    tree_leaves = leaves_function()

    fallback = WeightTrace("module order", _order_pairs(model))
    if model.training:
        fallback.reason = "the model is in training mode"
        return fallback
    if input_size is None:
        input_size = _default_input_size(model)
    param = next(model.parameters(), None)
    if param is None:
        return fallback
    tracer = _Tracer(model, tree_leaves)
    handles = tracer.hook_modules()
    try:
        x = torch.zeros((1, *input_size), dtype=param.dtype, device=param.device)
        tracer.forward(x)
    except Exception as exc:  # any model that cannot run this input: module order, and say why
        fallback.reason = f"a forward at input {tuple(input_size)} failed ({type(exc).__name__}: {exc})"[:300]
        return fallback
    finally:
        for h in handles:
            h.remove()
    return tracer.trace


def _default_input_size(model: "torch.nn.Module") -> tuple[int, ...]:
    from ..preprocessing.dataconfig import resolve_data_config

    try:
        return tuple(resolve_data_config(model)["input_size"])
    except Exception:  # a plain torch module: timm's default
        return (3, 224, 224)


class _Tracer:
    """The bookkeeping of :func:`trace_weights`' one forward: which tensors are constants (and the tracked
    weights each derives from), the module being run, each convolution's output and its operands."""

    def __init__(self, model: "torch.nn.Module", tree_leaves: Any) -> None:
        import torch

        self.model, self.tree_leaves = model, tree_leaves
        tracked = {n for n, p in model.named_parameters() if p.is_floating_point()}
        tracked |= {n for n, b in model.named_buffers() if n.rsplit(".", 1)[-1] in ("running_mean", "running_var")}
        self.names = {id(t): n for n, t in [*model.named_parameters(), *model.named_buffers()]}
        # id(constant) -> (the tensor, kept alive so its id is not reused; the tracked weights it derives from)
        self.const: dict[int, tuple[Any, tuple[str, ...]]] = {
            id(t): (t, (n,) if n in tracked else ()) for n, t in [*model.named_parameters(), *model.named_buffers()]}
        self.stack: list[str] = []
        self.trace = WeightTrace("traced")
        self.conv_out: dict[int, tuple[str, Any, _Operand, _Operand | None]] = {}  # id(output) -> (conv, output, w, b)
        self.conv_funcs = {torch.conv1d, torch.conv2d, torch.conv3d, torch.nn.functional.linear}
        self.recorded: set[int] = set()

    def operand(self, t: Any) -> _Operand | None:
        import torch

        if not isinstance(t, torch.Tensor) or id(t) not in self.const:
            return None  # not a weight (a kernel computed from the input)
        return _Operand(t.detach().cpu().float().numpy(), self.const[id(t)][1])

    def propagate(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        import torch

        inputs = [t for t in self.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if not all(id(t) in self.const for t in inputs):
            return
        covers = tuple(dict.fromkeys(c for t in inputs for c in self.const[id(t)][1]))
        view = getattr(func, "__name__", "") in _VIEWS
        for o in self.tree_leaves(out):
            if isinstance(o, torch.Tensor) and id(o) not in self.const:
                self.const[id(o)] = (o, covers)
                if covers and not view and o.is_floating_point() and o.numel() > 1 and id(o) not in self.recorded:
                    self.recorded.add(id(o))
                    self.trace.computed.append(_Operand(o.detach().cpu().float().numpy(), covers))

    def called(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        """What one torch function call shows: a convolution's output, a BatchNorm's input, new constants."""
        import torch

        if func in self.conv_funcs and len(args) >= 1 and isinstance(out, torch.Tensor):
            wo = self.operand(args[1] if len(args) > 1 else kwargs.get("weight"))
            if wo is not None:
                self.conv_out[id(out)] = (self.stack[-1] if self.stack else "", out, wo,
                                          self.operand(args[2] if len(args) > 2 else kwargs.get("bias")))
        elif func is torch.nn.functional.batch_norm:
            self.pair(args, kwargs, self.stack[-1] if self.stack else "")
        self.propagate(func, args, kwargs, out)

    def pair(self, args: tuple, kwargs: dict, bn: str) -> None:
        import torch

        params = dict(zip(("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"),
                          args))
        params.update(kwargs)
        x, mean, var = params.get("input"), params.get("running_mean"), params.get("running_var")
        if (params.get("training") or mean is None or var is None or id(x) not in self.conv_out
                or bn in self.trace.pairs):
            return
        conv, _, wo, bo = self.conv_out[id(x)]
        roles = (("running_mean", mean), ("running_var", var), ("weight", params.get("weight")),
                 ("bias", params.get("bias")))
        covers = {role: self.names[id(t)] for role, t in roles if isinstance(t, torch.Tensor) and id(t) in self.names}
        self.trace.pairs[bn] = conv
        self.trace.folds.append(_Fold(conv, bn, wo, bo, _f64(mean), _f64(var), _f64(params.get("weight")),
                                      _f64(params.get("bias")), float(params.get("eps", 1e-5)), covers))

    def hook_modules(self) -> list[Any]:
        """Hooks that keep :attr:`stack` at the module being run; returns their handles."""
        stack = self.stack

        def enter(name: str) -> Any:
            return lambda module, args: stack.append(name)  # returns None: the input is kept

        def leave(module: Any, args: Any, output: Any) -> None:  # must return None, or it replaces the output
            if stack:
                stack.pop()

        handles = []
        for name, mod in self.model.named_modules():
            handles.append(mod.register_forward_pre_hook(enter(name)))
            handles.append(mod.register_forward_hook(leave))
        return handles

    def forward(self, x: "torch.Tensor") -> None:
        import torch
        from torch.overrides import TorchFunctionMode

        tracer = self

        class Recorder(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                tracer.called(func, args, kwargs, out)
                return out

        with torch.no_grad(), Recorder():
            self.model(x)


def weight_forms(tracked: dict[str, "np.ndarray"], model: "torch.nn.Module", trace: WeightTrace) -> list[Form]:
    """Every form of every weight (see the module doc)."""
    forms: list[Form] = []
    for name, arr in tracked.items():
        forms.append(Form("raw", arr, (name,)))
        forms.extend(_transposed("transposed", arr, (name,)))
    for op in trace.computed:
        covers = tuple(c for c in op.covers if c in tracked)
        if covers:
            forms.append(Form("computed", op.array, covers))
            forms.extend(_transposed("computed", op.array, covers))
    folds = trace.folds if trace.pairing == "traced" else _order_folds(model, tracked, trace.pairs)
    for fold in folds:
        forms.extend(_folded(fold, tracked))
    return forms


def _transposed(kind: str, arr: "np.ndarray", covers: tuple[str, ...]) -> list[Form]:
    if arr.ndim == 2 and arr.shape[0] > 1 and arr.shape[1] > 1:
        return [Form(kind, arr, covers, transpose=True)]
    if arr.ndim == 4 and arr.shape[2:] == (1, 1) and min(arr.shape[:2]) > 1:
        return [Form(kind, arr.reshape(arr.shape[:2]), covers, transpose=True)]
    return []


def _order_folds(model: "torch.nn.Module", tracked: dict[str, "np.ndarray"], pairs: dict[str, str]) -> list[_Fold]:
    """Folds from module-order pairs (the fallback when the forward could not be traced)."""
    modules = dict(model.named_modules())
    folds = []
    for bn_name, conv_name in pairs.items():
        bn, conv = modules[bn_name], modules[conv_name]
        w = tracked.get(f"{conv_name}.weight")
        if w is None or bn.running_var is None:
            continue
        bias = getattr(conv, "bias", None)
        b = _Operand(_f64(bias).astype("float32"), (f"{conv_name}.bias",)) if bias is not None else None
        covers = {role: f"{bn_name}.{role}" for role in ("weight", "bias", "running_mean", "running_var")}
        folds.append(_Fold(conv_name, bn_name, _Operand(w, (f"{conv_name}.weight",)), b,
                           _f64(bn.running_mean), _f64(bn.running_var), _f64(bn.weight), _f64(bn.bias),
                           float(bn.eps), covers))
    return folds


def _folded(fold: _Fold, tracked: dict[str, "np.ndarray"]) -> list[Form]:
    import numpy as np

    var, mean = fold.var, fold.mean
    gamma = fold.gamma if fold.gamma is not None else np.ones_like(var)
    beta = fold.beta if fold.beta is not None else np.zeros_like(var)
    w = fold.weight.array
    if w.shape[0] != var.shape[0]:
        return []
    with np.errstate(invalid="ignore", divide="ignore"):  # a broken norm gives NaN: compared, never equal
        scale = gamma / np.sqrt(var + fold.eps)
    folded_w = w * scale.astype(np.float32).reshape((-1,) + (1,) * (w.ndim - 1))
    b = fold.bias.array.astype(np.float64) if fold.bias is not None else np.zeros_like(var)
    folded_b = ((b - mean) * scale + beta).astype(np.float32)
    bn = fold.bn_covers
    w_covers = (*fold.weight.covers, *(bn[r] for r in ("weight", "running_var") if r in bn))
    b_covers = (*(fold.bias.covers if fold.bias is not None else ()),
                *(bn[r] for r in ("bias", "running_mean", "running_var", "weight") if r in bn))
    w_covers = tuple(dict.fromkeys(c for c in w_covers if c in tracked))
    b_covers = tuple(dict.fromkeys(c for c in b_covers if c in tracked))
    forms = [Form("folded", folded_w, w_covers), Form("folded", folded_b, b_covers)]
    if folded_w.ndim == 2 or (folded_w.ndim == 4 and folded_w.shape[2:] == (1, 1)):
        forms.append(Form("folded", folded_w.reshape(folded_w.shape[:2]), w_covers, transpose=True))
    return forms
