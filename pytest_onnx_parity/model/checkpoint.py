"""Checkpoints as training leaves them: the weight set, the training args, the head and the stem.

A timm ``train.py`` checkpoint (``.pth.tar``) is a dict with ``state_dict``, often
``state_dict_ema``, keys prefixed ``module.`` by DDP, and ``args`` (an ``argparse.Namespace``);
a fine-tune saved by hand is a plain state dict, in ``.safetensors`` or ``.pth``.
:func:`read_checkpoint` reads either through timm's own loader
(``timm.models.load_state_dict(..., weights_only=True)``: no pickle code runs; its allowlist
covers the Namespace, and a checkpoint that needs more is refused, saying so). The weight
set follows ``timm.create_model(checkpoint_path=)``: the EMA weights when present
(``use_ema=False`` picks ``state_dict``).

:func:`infer_model_args` reads the head and stem from the weights: ``num_classes`` from the
classifier the model's pretrained config names (no classifier weights: ``num_classes=0``),
``in_chans`` from its first conv, a ViT's ``img_size`` from its position table (:func:`grid_img_size`),
the same for ``stamp`` and ``check``. :func:`fit_message` says why a checkpoint does not fit a model and
which argument would.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import WeightsError
from ..specs import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch

EMA_SETS = ("state_dict_ema", "model_ema")
PLAIN_SETS = ("state_dict", "model")
WEIGHT_SET_OPTION = "--onnx-parity-weight-set"


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint file, read: the weight set used, the other one it holds, its training args."""

    path: Path
    state_dict: dict[str, Any]
    weight_set: str  # "state_dict_ema", "state_dict", ... or "" for a plain state dict
    other_set: str | None  # the other weight set the file holds (EMA or not), or None
    train_args: dict[str, Any] | None  # vars(args) of a timm train.py checkpoint

    def describe(self) -> str:
        return f"{self.path.name} ({self.weight_set or 'state dict'})"


def read_checkpoint(spec: "ModelSpec | str | Path", *, use_ema: bool = True) -> Checkpoint:
    """The checkpoint of ``spec`` (its ``=WEIGHTS`` path, or a path), read once per file state and ``use_ema``."""
    path = Path(spec.weights if isinstance(spec, ModelSpec) else spec).expanduser()
    st = path.stat()
    return _read(str(path.resolve()), st.st_mtime_ns, st.st_size, use_ema)


@functools.lru_cache(maxsize=2)
def _read(path: str, _mtime: int, _size: int, use_ema: bool) -> Checkpoint:
    import timm.models

    sets, train_args = _container(Path(path))
    try:
        state_dict = timm.models.load_state_dict(path, use_ema=use_ema, weights_only=True)
    except RuntimeError as exc:
        raise WeightsError(refusal(Path(path), exc)) from None
    if use_ema and any(s in sets for s in EMA_SETS):
        used = next(s for s in EMA_SETS if s in sets)
    else:
        used = next((s for s in PLAIN_SETS if s in sets), "")
    ema, plain = any(s in sets for s in EMA_SETS), any(s in sets for s in PLAIN_SETS)
    other = None
    if ema and plain:
        other = next(s for s in (PLAIN_SETS if used in EMA_SETS else EMA_SETS) if s in sets)
    return Checkpoint(Path(path), state_dict, used, other, train_args)


def other_state_dict(ckpt: Checkpoint) -> dict[str, Any] | None:
    """The checkpoint's other weight set (EMA or not), through timm's loader, or None when it holds one."""
    if ckpt.other_set is None:
        return None
    return _read(str(ckpt.path), *_stat(ckpt.path), ckpt.other_set in EMA_SETS).state_dict


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def _container(path: Path) -> tuple[set[str], dict[str, Any] | None]:
    """The weight sets a ``torch.save`` dict holds, and its ``args``; a safetensors file holds one plain set."""
    if path.name.lower().endswith(".safetensors"):
        return set(), None
    import argparse

    import torch

    try:
        with torch.serialization.safe_globals([argparse.Namespace]):  # timm's own allowlist
            raw = torch.load(str(path), map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except Exception as exc:  # noqa: BLE001 - unpickling refused or unreadable: said by timm's loader below
        if "weights_only" in str(exc) or "global" in str(exc).lower():
            raise WeightsError(refusal(path, exc)) from None
        return set(), None
    if not isinstance(raw, dict):
        return set(), None
    sets = {k for k in EMA_SETS + PLAIN_SETS if isinstance(raw.get(k), Mapping)}
    args = raw.get("args")
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    return sets, dict(args) if isinstance(args, Mapping) else None


def _is_zip(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(2) == b"PK"


def refusal(path: Path, exc: BaseException) -> str:
    reason = " ".join(str(exc).split())[:400]
    return (f"checkpoint {path} was not loaded: it needs pickle code beyond what a weights-only load allows "
            f"(timm's loader said: {reason}). Nothing in it ran. Save the weights alone and check those: "
            "torch.save({'state_dict': model.state_dict()}, PATH) or safetensors.torch.save_file(model.state_dict(), "
            "PATH.safetensors)")


def _names(cfg: Mapping[str, Any], key: str) -> list[str]:
    v = cfg.get(key)
    return [v] if isinstance(v, str) and v else [x for x in (v or ()) if isinstance(x, str)]


def infer_model_args(state_dict: Mapping[str, Any], pretrained_cfg: Mapping[str, Any],
                     explicit: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``num_classes``, ``in_chans`` and a ViT's ``img_size`` read from a checkpoint, for those not in ``explicit``.

    ``num_classes``: rows of the classifier's weight (the pretrained config's ``classifier``, the
    first of a distilled pair); no weight under that name: ``0`` (a pooled-embedding model). Not
    read for a ``features_only`` model (it has no head). ``in_chans``: the first conv's input
    channels (``first_conv``). A name the config does not give is left to the architecture's default.
    ``img_size``: :func:`grid_img_size`, when it differs from the config's input size.
    """
    explicit = explicit or {}
    out: dict[str, Any] = {}
    if "num_classes" not in explicit and not explicit.get("features_only"):
        heads = _names(pretrained_cfg, "classifier")
        if heads:
            w = state_dict.get(f"{heads[0]}.weight")
            if w is not None and getattr(w, "ndim", 0) >= 2:
                out["num_classes"] = int(w.shape[0])
            elif not any(k.startswith(f"{heads[0]}.") for k in state_dict):
                out["num_classes"] = 0
    if "in_chans" not in explicit:
        convs = _names(pretrained_cfg, "first_conv")
        w = state_dict.get(f"{convs[0]}.weight") if convs else None
        if w is not None and getattr(w, "ndim", 0) == 4:
            out["in_chans"] = int(w.shape[1])
    size = None if "img_size" in explicit or explicit.get("dynamic_img_size") else grid_img_size(state_dict)
    if size is not None and [size, size] != list((pretrained_cfg.get("input_size") or (3, 224, 224))[1:]):
        out["img_size"] = size
    return out


def grid_img_size(state_dict: Mapping[str, Any]) -> int | None:
    """A ViT's square image size, read from its position table: ``pos_embed`` (1, prefix + grid, D), where
    prefix counts the class, distillation and register tokens (``cls_token``, ``dist_token``, ``reg_token``)
    unless the table leaves them out (``no_embed_class``: then it is the grid alone), and the patch size is the
    kernel of ``patch_embed.proj``. None when the weights do not say it (no such table, a hybrid's CNN stem,
    a grid that is not square)."""
    import math

    pos, proj = state_dict.get("pos_embed"), state_dict.get("patch_embed.proj.weight")
    if getattr(pos, "ndim", 0) != 3 or getattr(proj, "ndim", 0) != 4 or any(k.startswith("patch_embed.backbone.") for k in state_dict):
        return None
    ph, pw = (int(v) for v in proj.shape[-2:])
    prefix = sum(int(t.shape[1]) for t in (state_dict.get(k) for k in ("cls_token", "dist_token", "reg_token"))
                 if getattr(t, "ndim", 0) == 3)
    for tokens in dict.fromkeys((int(pos.shape[1]) - prefix, int(pos.shape[1]))):
        side = math.isqrt(max(tokens, 0))
        if side > 0 and side * side == tokens and ph == pw:
            return side * ph
    return None


def load_into(model: "torch.nn.Module", ckpt: Checkpoint, spec: ModelSpec, args: Mapping[str, Any]) -> list[str]:
    """Load ``ckpt`` into ``model`` strictly; the keys dropped on purpose (a ``features_only`` backbone
    from a classifier's checkpoint: the head it cuts off). Raises :class:`WeightsError` from
    :func:`fit_message` when the weights do not fit."""
    try:
        model.load_state_dict(ckpt.state_dict, strict=True)  # torch's own rules (a missing BN counter is fine)
        return []
    except RuntimeError:
        pass
    own = model.state_dict()
    state = ckpt.state_dict
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(getattr(state[k], "shape", ()))]
    dropped: list[str] = []
    if args.get("features_only") and unexpected and not missing and not shapes:
        dropped, state = unexpected, {k: v for k, v in state.items() if k in own}
        unexpected = []
    if missing or unexpected or shapes:
        raise WeightsError(fit_message(model, ckpt, spec, missing, unexpected, shapes))
    model.load_state_dict(state, strict=False)  # only the dropped head is left out (checked above)
    return dropped


def fit_message(model: "torch.nn.Module", ckpt: Checkpoint, spec: ModelSpec, missing: list[str],
                unexpected: list[str], shapes: list[str]) -> str:
    """Why ``ckpt`` does not fit ``model``: the mismatched keys and shapes, and the argument that would fit."""
    own = model.state_dict()
    lines = [f"checkpoint {ckpt.path} ({ckpt.weight_set or 'a state dict'}) does not fit {spec.label} "
             f"(from spec {spec.text!r}):"]
    for k in shapes[:8]:
        lines.append(f"  {k}: checkpoint {tuple(ckpt.state_dict[k].shape)}, model {tuple(own[k].shape)}")
    if missing:
        lines.append(f"  missing from the checkpoint ({len(missing)}): {', '.join(missing[:8])}"
                     + (", ..." if len(missing) > 8 else ""))
    if unexpected:
        lines.append(f"  not in the model ({len(unexpected)}): {', '.join(unexpected[:8])}"
                     + (", ..." if len(unexpected) > 8 else ""))
    fits = [] if missing or unexpected else _fitting_args(model, ckpt.state_dict, shapes)
    if fits:
        lines.append(f"It fits with {', '.join(fits)}: write {spec.name}({','.join(fits)})=... "
                     "(or pass model_args=).")
    elif unexpected and not missing:
        lines.append("The checkpoint holds more than the model: a head or a larger variant? Check the architecture "
                     "name, or pass features_only=True for a backbone.")
    else:
        lines.append(f"Check that the checkpoint is a state dict of {spec.name} in timm's naming (another "
                     "architecture shows as missing and unexpected keys).")
    return "\n".join(lines)


def _fitting_args(model: "torch.nn.Module", state: Mapping[str, Any], shapes: list[str]) -> list[str]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    out: list[str] = []
    inferred = infer_model_args(state, cfg, {})
    heads, convs = _names(cfg, "classifier"), _names(cfg, "first_conv")
    if heads and any(k.startswith(f"{heads[0]}.") for k in shapes) and "num_classes" in inferred:
        out.append(f"num_classes={inferred['num_classes']}")
    if convs and f"{convs[0]}.weight" in shapes and "in_chans" in inferred:
        out.append(f"in_chans={inferred['in_chans']}")
    pos = "pos_embed"
    if pos in shapes and hasattr(model, "patch_embed"):
        size = _vit_img_size(model, tuple(state[pos].shape))
        if size:
            out.append(f"img_size={size}")
    explained = [k for k in shapes if k == pos or any(k.startswith(f"{n}.") for n in heads[:1] + convs[:1])]
    return out if len(explained) == len(shapes) else []


def _vit_img_size(model: Any, shape: tuple[int, ...]) -> int | None:
    """The square image size whose patch grid gives a position table of ``shape`` (a ViT's), or None."""
    import math

    prefix = 0 if getattr(model, "no_embed_class", False) else int(getattr(model, "num_prefix_tokens", 0))
    patch = getattr(model.patch_embed, "patch_size", None)
    if len(shape) != 3 or not patch:
        return None
    side = math.isqrt(shape[1] - prefix)
    return side * int(patch[0]) if side * side == shape[1] - prefix else None
