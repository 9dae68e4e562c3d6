"""Model specs: ``NAME`` or ``NAME=WEIGHTS``.

``NAME`` is anything ``timm.create_model`` accepts (``resnet18``,
``vit_small_patch16_224.augreg_in21k_ft_in1k``, ``hf-hub:org/repo``).
``WEIGHTS`` is ``random``, ``pretrained`` or the path of a local checkpoint
(``.safetensors``, ``.pth``, ``.pt``, ``.bin``, ``.ckpt``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import SpecError, UnknownModelError

WEIGHT_KINDS = ("random", "pretrained")
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".pth.tar")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec. ``text`` is the spec as given (the gate item's name)."""

    name: str
    weights: str  # "random", "pretrained" or a checkpoint path
    text: str

    @property
    def weights_kind(self) -> str:
        return self.weights if self.weights in WEIGHT_KINDS else "file"

    @property
    def architecture(self) -> str:
        return self.name.split(".", 1)[0] if not self.name.startswith("hf-hub:") else self.name

    def __str__(self) -> str:
        return self.text


def parse_spec(text: str, default_weights: str = "random") -> ModelSpec:
    """Parse ``NAME`` or ``NAME=WEIGHTS``; weights default to ``default_weights``."""
    if not isinstance(text, str):
        raise SpecError(f"a model spec is a string NAME or NAME=WEIGHTS, got {type(text).__name__} {text!r}")
    raw = text.strip()
    name, sep, weights = raw.partition("=")
    name, weights = name.strip(), weights.strip()
    if not name:
        raise SpecError(f"model spec {text!r} has no model name: write NAME or NAME=WEIGHTS, e.g. resnet18=random")
    if sep and not weights:
        raise SpecError(f"model spec {text!r} has an empty weights part: use {name}=random, {name}=pretrained or {name}=/path/to/checkpoint.safetensors")
    weights = weights or default_weights
    if weights not in WEIGHT_KINDS and not _looks_like_path(weights):
        raise SpecError(
            f"model spec {text!r}: weights {weights!r} are neither 'random', 'pretrained' nor a checkpoint path "
            f"(a file ending in {', '.join(CHECKPOINT_SUFFIXES)})"
        )
    return ModelSpec(name=name, weights=weights, text=raw)


def _looks_like_path(weights: str) -> bool:
    return weights.lower().endswith(CHECKPOINT_SUFFIXES) or "/" in weights or "\\" in weights or Path(weights).exists()


def close_matches(name: str, n: int = 5) -> list[str]:
    """timm model names close to ``name`` (architectures and pretrained tags)."""
    import difflib

    import timm

    arch = name.split(".", 1)[0]
    candidates = timm.list_models()
    out = difflib.get_close_matches(arch, candidates, n=n, cutoff=0.6)
    if "." in name and timm.is_model(arch):
        out = difflib.get_close_matches(name, timm.list_pretrained(f"{arch}*"), n=n, cutoff=0.5) or timm.list_pretrained(f"{arch}*")[:n]
    return out


def check_model_name(name: str) -> None:
    """Raise :class:`UnknownModelError` with close matches when timm does not know ``name``."""
    if name.startswith("hf-hub:") or name.startswith("local-dir:"):
        return
    import timm

    arch, _, tag = name.partition(".")
    known = timm.is_model(arch)
    if known and tag:
        known = name in timm.list_pretrained(f"{arch}.*")
    if not known:
        matches = close_matches(name)
        hint = f" Did you mean: {', '.join(matches)}?" if matches else " See timm.list_models() for the names timm knows."
        what = "pretrained tag" if timm.is_model(arch) else "model"
        raise UnknownModelError(f"timm has no {what} {name!r}.{hint}")


def expand_patterns(specs: list[str], default_weights: str = "random") -> list[ModelSpec]:
    """Parse specs; a NAME with shell wildcards expands over ``timm.list_models``.

    ``convnext_*=random`` gives one spec per matching architecture, in timm's order.
    A pattern that matches nothing is an error. Duplicates are dropped.
    """
    out: list[ModelSpec] = []
    seen: set[str] = set()
    for text in specs:
        spec = parse_spec(text, default_weights)
        if any(c in spec.name for c in "*?["):
            import timm

            names = timm.list_models(spec.name) if "." not in spec.name else timm.list_pretrained(spec.name)
            if not names:
                raise SpecError(f"model pattern {spec.name!r} matches no timm model; see timm.list_models()")
            suffix = text.strip()[len(spec.name.strip()):] if "=" in text else ""
            expanded = [ModelSpec(name=n, weights=spec.weights, text=n + suffix.strip()) for n in names]
        else:
            expanded = [spec]
        for s in expanded:
            if s.text not in seen:
                seen.add(s.text)
                out.append(s)
    return out

