"""Build timm models from specs, with random weights that can fail.

Random weights
--------------
timm initialises many scales to zero or near zero so that training starts from
an identity-like network: the last norm of residual branches (``zero_init_last``),
``ls_init_value=1e-6`` layer scales, zero classifier heads (MLP-Mixer), zero
skip-init gains (NFNet), near-zero class tokens. With such weights a broken layer
cannot reach the logits (on resnet18 a 1.5x error planted in ``layer3.0.conv2``
changes the logits by exactly 0.0), so a parity check on them proves nothing.

:func:`make_nondegenerate` turns timm's init into weights under which every layer
reaches the logits, deterministically from a seed:

1. ``torch.manual_seed(seed)`` before ``timm.create_model`` (timm's own init).
2. Re-draw degenerate parameters (constant, or max |w| < 1e-4) from a generator
   seeded with ``seed``: matrices/kernels ``N(0, 1/fan_in)``; 1-D scales (norm
   weights, layer-scale gammas, gains, temperatures) ``U(0.5, 1.5)``; biases (all
   of them, norm biases included) ``N(0, 0.2^2)``, so a scaled kernel cannot hide
   behind a following normalisation. Norm weights that are all ones count as
   constant, so a per-channel error cannot cancel. Position embeddings, tokens and
   relative-position bias tables whose std is below 0.05 (timm draws them at 0.02
   or zero) are re-drawn ``N(0, 0.5^2)``, so an error in them reaches the logits.
3. Calibrate BatchNorm statistics: reset running stats and run a batch of two
   seeded noise images and two of the bundled photos through the model with only
   the BatchNorm layers in training mode (cumulative average), so each BN
   normalises its real input, on noise and on natural images alike; variances are
   floored at 5% of their layer's mean.
4. Scale the classifier so the logits have unit standard deviation on that batch.

The result is deterministic for a given (model name, seed, timm, torch, torch's
thread count) in every process; the cache key holds all five (the thread count
changes the summation order of the calibration, so the last bits of BN statistics).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from ..specs import ModelSpec, check_model_name, parse_spec
from .record import CALIBRATED_ON_PHOTOS, LoadedModel, ModelRecord

if TYPE_CHECKING:  # pragma: no cover
    import torch

NONDEGENERATE_VERSION = 5  # bump when the re-draw method changes: it is part of the cache key
CALIBRATION_BATCH = 4


#: keyword arguments of load_model that change how a model is built, not which model it is (not in its name)
BUILD_ONLY_ARGS = ("dynamic_img_size",)


def load_model(spec: "str | ModelSpec", weights: str | None = None, *, seed: int = 0,
               model_args: dict[str, Any] | None = None, data_config: dict[str, Any] | None = None,
               use_ema: bool = True, **create_kwargs: Any) -> "torch.nn.Module":
    """The timm model of ``spec`` in eval mode (:func:`load_model_record`'s module).

    ``weights`` (``random``, ``pretrained`` or a checkpoint path) overrides the
    spec's own; a spec without ``=WEIGHTS`` and no ``weights`` gets ``random``.
    ``model_args`` (and any other keyword, e.g. ``num_classes=0``) go to
    ``timm.create_model`` beside the spec's own ``NAME(ARGS)``; with a checkpoint,
    ``num_classes`` and ``in_chans`` not given are read from it (:mod:`.checkpoint`),
    and ``use_ema`` picks a train.py checkpoint's weight set. ``data_config``
    overrides the model's data config. The resolved data config is in the module's
    ``pretrained_cfg`` (timm's own field), so ``timm.data.resolve_data_config(model=m)``
    gives it too; where it came from, and the rest of what was learned, is in the
    record of :func:`load_model_record`.
    """
    return load_model_record(spec, weights, seed=seed, model_args=model_args, data_config=data_config,
                             use_ema=use_ema, **create_kwargs).module


def load_model_record(spec: "str | ModelSpec", weights: str | None = None, *, seed: int = 0,
                      model_args: dict[str, Any] | None = None, data_config: dict[str, Any] | None = None,
                      use_ema: bool = True, **create_kwargs: Any) -> LoadedModel:
    """:func:`load_model`'s module and its :class:`~.record.ModelRecord`: the spec (arguments included), the
    seed, the data config and its source, the checkpoint and the keys it dropped, the calibration."""
    from dataclasses import replace

    from ..preprocessing.dataconfig import spec_inputs
    from ..specs import with_model_args
    from .constructor import create, create_pretrained

    if isinstance(spec, str):
        spec = parse_spec(spec, default_weights=weights or "random")
    if weights is not None and weights != spec.weights:
        spec = replace(spec, weights=parse_spec(f"{spec.name}={weights}").weights)
    build_only = {k: create_kwargs.pop(k) for k in BUILD_ONLY_ARGS if k in create_kwargs}
    spec = with_model_args(spec, {**(model_args or {}), **create_kwargs})
    check_model_name(spec.name)
    import timm
    import torch

    kind = spec.weights_kind
    inputs = spec_inputs(spec, use_ema=use_ema)  # the checkpoint read once; the head and stem read from it
    args, ckpt = inputs.args, inputs.checkpoint
    if kind == "random":
        torch.manual_seed(seed)
    if kind == "pretrained":
        model = create_pretrained(timm, spec, **args, **build_only)
    else:
        model = create(timm, spec, pretrained=False, **args, **build_only)
    config, source = inputs.data_config(data_config)  # the rule resolve_data_config(spec) follows
    _overlay_pretrained_cfg(model, config)
    record = ModelRecord(data_config=config, data_config_source=source, spec=spec, seed=seed)
    if kind == "random":
        record = replace(record, calibration=_make_nondegenerate(model, seed, config))
    elif ckpt is not None:
        from .checkpoint import load_into

        record = replace(record, checkpoint=ckpt, dropped_keys=tuple(load_into(model, ckpt, spec, args)))
    model.eval()
    return LoadedModel(model, record)


def _overlay_pretrained_cfg(model: "torch.nn.Module", config: dict[str, Any]) -> None:
    """Write the resolved data config into the module's ``pretrained_cfg``, as timm's ``pretrained_cfg_overlay``
    does (``default_cfg`` is timm's alias of it): test-time fields the config does not keep are cleared."""
    from ..preprocessing.dataconfig import DATA_CONFIG_FIELDS, TEST_TIME_FIELDS

    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    cfg.update({k: config.get(k) for k in DATA_CONFIG_FIELDS + TEST_TIME_FIELDS})
    for key in ("input_size", "test_input_size", "mean", "std"):
        if cfg.get(key) is not None:
            cfg[key] = tuple(cfg[key])
    model.pretrained_cfg = cfg  # type: ignore[assignment]
    model.default_cfg = cfg  # type: ignore[assignment]


def record_of(module: Any, data_config: Mapping[str, Any] | None = None) -> ModelRecord:
    """The record of a module built elsewhere: its data config from its ``pretrained_cfg`` (``data_config``
    overrides on top, source ``override``), no spec. The module is not changed."""
    from ..preprocessing.dataconfig import resolve_data_config

    config = resolve_data_config(module, data_config=data_config)
    return ModelRecord(data_config=config, data_config_source="override" if data_config else "pretrained_cfg")


def loaded(model: "LoadedModel | torch.nn.Module", data_config: Mapping[str, Any] | None = None) -> LoadedModel:
    """``model`` as a :class:`~.record.LoadedModel`: one as it is (``data_config`` overrides applied to its
    record), a module with :func:`record_of`."""
    if not isinstance(model, LoadedModel):
        return LoadedModel(model, record_of(model, data_config))
    if not data_config:
        return model
    from dataclasses import replace

    from ..preprocessing.dataconfig import override_config

    config = override_config(model.record.data_config, data_config)
    return LoadedModel(model.module, replace(model.record, data_config=config, data_config_source="override"))


def _is_degenerate(t: "torch.Tensor") -> bool:
    if t.numel() == 0:
        return False
    import torch

    lo, hi = torch.aminmax(t.detach().flatten())
    lo, hi = float(lo), float(hi)
    return max(abs(lo), abs(hi)) < 1e-4 or lo == hi


def make_nondegenerate(model: "torch.nn.Module", seed: int = 0) -> "torch.nn.Module":
    """Re-draw degenerate parameters, calibrate BatchNorm, scale logits to unit std.

    See the module docstring for the method. Works in place and returns ``model``.
    """
    from ..preprocessing.dataconfig import resolve_data_config

    _make_nondegenerate(model, seed, resolve_data_config(model))
    return model


def _make_nondegenerate(model: "torch.nn.Module", seed: int, config: dict[str, Any]) -> str:
    """:func:`make_nondegenerate` on a model whose data config is ``config``; how BatchNorm was calibrated."""
    import torch

    gen = torch.Generator().manual_seed(seed + 7919)
    norm_types = _norm_types()
    with torch.no_grad():
        for _mod_name, module in model.named_modules():
            is_norm = isinstance(module, norm_types)
            for pname, p in module.named_parameters(recurse=False):
                if not p.dtype.is_floating_point:
                    continue
                if pname.endswith("bias") and p.ndim == 1:
                    if _is_degenerate(p):
                        p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
                elif _is_table(pname) and not is_norm:
                    # position embeddings, tokens, relative-position bias tables: timm draws them at
                    # std 0.02 or zero, too small for an error in them to reach the logits
                    if _is_degenerate(p) or float(p.detach().float().std()) < 0.05:
                        p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
                elif not _is_degenerate(p):
                    continue
                elif p.ndim >= 2:
                    fan_in = p[0].numel()
                    p.copy_(torch.randn(p.shape, generator=gen) / max(fan_in, 1) ** 0.5)
                elif p.ndim == 1:  # norm weights, layer scales, gains, temperatures: positive scales
                    p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
                else:
                    p.fill_(float(torch.rand((), generator=gen)) + 0.5)
        return _calibrate(model, gen, config)


def _norm_types() -> tuple[type, ...]:
    import torch.nn as nn

    return (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.modules.normalization.RMSNorm)


_TABLE_WORDS = ("pos_embed", "position", "relative", "rel_pos", "bias_table", "attention_biases", "token", "pos_")


def _is_table(pname: str) -> bool:
    return any(w in pname for w in _TABLE_WORDS)


def calibration_input(cfg: dict[str, Any], gen: "torch.Generator", batch: int = CALIBRATION_BATCH) -> "torch.Tensor":
    """A seeded batch of random pixels normalised with the mean/std of the data config ``cfg``."""
    import torch

    c, h, w = cfg["input_size"]
    x = torch.rand((batch, c, h, w), generator=gen)
    mean = torch.tensor(cfg["mean"][:c]).view(1, -1, 1, 1)
    std = torch.tensor(cfg["std"][:c]).view(1, -1, 1, 1)
    return (x - mean) / std


def _calibration_batch(cfg: dict[str, Any], gen: "torch.Generator") -> "tuple[torch.Tensor, str]":
    """Two seeded noise images and two of the bundled photos, preprocessed for the model.

    Calibrating on photos as well as noise keeps the network healthy on both: a BN
    calibrated on noise alone can blow up on natural images (efficientnet_b0: logit RMS
    ~3000 on the photos against 1 on noise). A model the photos cannot feed (a channel
    count other than 3 or 1) is calibrated on noise only, and that is recorded: in
    the record's ``calibration`` (returned beside the batch) and in :func:`weights_identity`, so such
    weights never share a cache entry with photo-calibrated ones.
    """
    import torch

    from ..preprocessing.decode import CHANNEL_MODES
    from .constructor import first_line

    noise = calibration_input(cfg, gen, batch=2)
    why = None
    if cfg["input_size"][0] not in CHANNEL_MODES:  # 3: RGB; 1: the photos converted to L, as timm loads them
        why = f"the model takes {cfg['input_size'][0]} channels; photos decode to 3 (RGB) or 1 (L)"
    else:
        from ..preprocessing.images import bundled_image_paths
        from ..preprocessing.transform import preprocess

        try:
            photos = torch.from_numpy(preprocess(bundled_image_paths()[:2], cfg))
        except Exception as exc:  # noqa: BLE001 - a broken install (photos missing): recorded, not hidden
            why = f"the bundled photos cannot be used: {first_line(exc)}"
    if why is not None:
        return calibration_input(cfg, gen, batch=CALIBRATION_BATCH), f"noise only ({why})"
    return torch.cat([noise, photos.to(noise.dtype)]), CALIBRATED_ON_PHOTOS


def _calibrate(model: "torch.nn.Module", gen: "torch.Generator", cfg: dict[str, Any]) -> str:
    import torch.nn as nn

    x, calibration = _calibration_batch(cfg, gen)
    was_training = model.training
    model.eval()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m, m.momentum) for m in bns]
    heads = _classifier_modules(model)
    captured: dict[int, "torch.Tensor"] = {}
    hooks = [h.register_forward_hook(lambda mod, inp, out, i=i: captured.__setitem__(i, inp[0].detach()))
             for i, h in enumerate(heads)] if bns else []
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration pass
            m.train()
        if bns:
            model(x)
    finally:
        for h in hooks:
            h.remove()
        for m, momentum in saved:
            m.momentum = momentum
            m.eval()
            # a norm over pooled features sees only a few calibration samples: a channel that barely
            # varied there would blow up on other inputs, so keep each variance near its layer's scale
            if m.running_var is not None:
                m.running_var.clamp_(min=0.05 * float(m.running_var.mean()) + 1e-12)
        model.train(was_training)
    if heads and len(captured) == len(heads):
        # the heads' inputs from the calibration pass (running stats = that batch's own) give the
        # logit scale without a second forward through the body
        outs = [heads[i](captured[i]) for i in range(len(heads))]
        logits = sum(outs) / len(outs)
    else:
        logits = model(x)
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    std = float(logits.float().std())
    if std > 0:
        for head in heads:  # distilled models have two heads, averaged
            for t in (getattr(head, "weight", None), getattr(head, "bias", None)):
                if t is not None:
                    t.mul_(1.0 / std)
    return calibration


def _classifier_modules(model: "torch.nn.Module") -> list["torch.nn.Module"]:
    get = getattr(model, "get_classifier", None)
    if get is None:
        return []
    try:
        heads = get()
    except Exception:
        return []
    heads = heads if isinstance(heads, (tuple, list)) else [heads]
    out = []
    for head in heads:
        # a head may be a Sequential/NormLinear wrapper: scale its last layer with a weight
        mods = [m for m in head.modules() if hasattr(m, "weight") and getattr(m, "weight") is not None
                and m.weight.ndim >= 2] if hasattr(head, "modules") else []
        if mods:
            out.append(mods[-1])
    return out


def weights_identity(model: "LoadedModel | torch.nn.Module") -> str:
    """A short identity of the model's weights for provenance and cache keys.

    Random weights built from a spec (a :class:`~.record.LoadedModel` says so) are identified by seed and
    method; other weights by a sha256 over the state dict (names, dtypes, shapes and bytes).
    """
    record = model.record if isinstance(model, LoadedModel) else None
    if record is not None and record.random_weights:
        import torch

        # BatchNorm calibration sums in an order that depends on torch's thread count, so the last
        # bits of the weights do too: the identity (and so the cache key) names it
        calibration = record.calibration or CALIBRATED_ON_PHOTOS
        noise_only = ":calibration=noise-only" if calibration.startswith("noise only") else ""
        return (f"random:seed={record.seed}:nondegenerate-v{NONDEGENERATE_VERSION}"
                f":threads={torch.get_num_threads()}{noise_only}")
    return "sha256:" + state_dict_hash(model.module if isinstance(model, LoadedModel) else model)


def state_dict_hash(model: "torch.nn.Module") -> str:
    import hashlib

    import torch

    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        t = t.detach().contiguous().cpu()
        try:
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
        except (RuntimeError, TypeError):
            h.update(t.numpy().tobytes())
    return h.hexdigest()[:32]


def model_name(model: "LoadedModel | torch.nn.Module") -> str:
    """The timm name (with pretrained tag when known) of a model: its spec's label when a record has one."""
    if isinstance(model, LoadedModel):
        if model.record.spec is not None:
            return model.record.spec.label
        model = model.module
    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch = cfg.get("architecture") or type(model).__name__
    tag = cfg.get("tag")
    return f"{arch}.{tag}" if tag else arch
