"""Model specs: ``NAME``, ``NAME=WEIGHTS``, ``NAME(ARGS)`` and ``NAME[(ARGS)][=WEIGHTS]@FILE.onnx``.

``NAME`` is anything ``timm.create_model`` accepts (``resnet18``,
``vit_small_patch16_224.augreg_in21k_ft_in1k``, ``hf-hub:org/repo``, ``local-dir:/path``).
``(ARGS)`` are ``key=value`` pairs whose values are Python literals, passed to
``timm.create_model``: ``efficientnet_b0(features_only=True,out_indices=(2,3,4))``
(:func:`parse_model_args`). Commas inside parentheses never split a list of specs
(:func:`split_specs`).
``WEIGHTS`` is ``random``, ``pretrained`` or the path of a local checkpoint
(``.safetensors``, ``.pth``, ``.pt``, ``.bin``, ``.ckpt``).
``@FILE.onnx`` (the text after the last ``@``, ending in ``.onnx``) names an
existing ONNX file, made anywhere, to check against that model instead of the
plugin's own export; the file is only read. In the gate a relative path resolves
against pytest's rootdir (see :func:`resolve_onnx_file`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..axes import WEIGHT_KINDS
from ..errors import SpecError, UnknownModelError, WeightsError
from .grammar import split_args, format_model_args, freeze, parse_model_args, split_specs

__all__ = ["CHECKPOINT_SUFFIXES", "ModelSpec", "check_checkpoint", "check_model_name", "close_matches", "expand_patterns",
           "file_spec", "format_model_args", "freeze", "names_weights", "parse_model_args", "parse_spec", "preflight",
           "resolve_onnx_file", "short_text", "split_onnx_file", "split_specs", "with_model_args"]

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".pth.tar")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec. ``text`` is the spec as given (the gate item's name)."""

    name: str
    weights: str  # "random", "pretrained" or a checkpoint path
    text: str
    onnx_file: str | None = None  # NAME[=WEIGHTS]@FILE.onnx: the file to check, as written
    model_args: tuple[tuple[str, Any], ...] = field(default=())  # NAME(ARGS), in the order written

    @property
    def kwargs(self) -> dict[str, Any]:
        """The model arguments for ``timm.create_model``."""
        return dict(self.model_args)

    @property
    def label(self) -> str:
        """NAME with its arguments, canonical (``resnet18(num_classes=0)``): the model a spec builds."""
        return self.name + format_model_args(self.kwargs)

    @property
    def weights_kind(self) -> str:
        return self.weights if self.weights in WEIGHT_KINDS else "file"

    @property
    def architecture(self) -> str:
        return self.name.split(".", 1)[0] if not self.name.startswith("hf-hub:") else self.name

    def __str__(self) -> str:
        return self.text


def split_onnx_file(text: str) -> tuple[str, str | None]:
    """``"NAME[=WEIGHTS]@FILE.onnx"`` -> ``("NAME[=WEIGHTS]", "FILE.onnx")``; no ``@``: ``(text, None)``.

    The file is the text after the last ``@`` and must end in ``.onnx``. An ``hf-hub:``
    name keeps its ``@revision`` (a tail without ``.onnx`` and without a path separator).
    """
    head, at, tail = text.rpartition("@")
    if not at:
        return text, None
    tail = tail.strip()
    if tail.lower().endswith(".onnx"):
        if not head.strip():
            raise SpecError(f"model spec {text!r} has no model name before '@': write NAME[=WEIGHTS]@{tail}, "
                            "e.g. resnet18=/path/to/checkpoint.safetensors@model.onnx")
        return head.strip(), tail
    if text.strip().startswith("hf-hub:") and "=" not in head and "/" not in tail and "\\" not in tail:
        return text, None  # hf-hub:org/repo@revision
    raise SpecError(f"model spec {text!r}: the text after '@' ({tail!r}) is not an ONNX file. Write "
                    f"NAME[=WEIGHTS]@FILE.onnx with the path of the .onnx file to check (ending in .onnx), "
                    f"or leave out '@...' to check the plugin's own export.")


def parse_spec(text: str, default_weights: str = "random") -> ModelSpec:
    """Parse ``NAME[(ARGS)][=WEIGHTS][@FILE.onnx]``; weights default to ``default_weights``."""
    if not isinstance(text, str):
        raise SpecError(f"a model spec is a string NAME or NAME=WEIGHTS, got {type(text).__name__} {text!r}")
    raw = text.strip()
    model_part, onnx_file = split_onnx_file(raw)
    head, args_text, model_part = split_args(model_part, raw)
    name, sep, weights = model_part.partition("=")
    name, weights = (head if args_text is not None else name).strip(), weights.strip()
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
    args = tuple(parse_model_args(args_text, where=f"model spec {text!r}").items()) if args_text is not None else ()
    return ModelSpec(name=name, weights=weights, text=raw, onnx_file=onnx_file, model_args=args)


def names_weights(text: str) -> bool:
    """True when the spec ``text`` has its own ``=WEIGHTS`` (an ``=`` inside ``NAME(ARGS)`` is not one)."""
    model_part, _ = split_onnx_file(text.strip())
    return "=" in split_args(model_part, text)[2]


def with_model_args(spec: ModelSpec, model_args: "dict[str, Any] | None") -> ModelSpec:
    """``spec`` with ``model_args`` (the API's ``model_args=``) added to its ``NAME(ARGS)``.

    A key given both ways with different values is a :class:`SpecError`; the spec's text stays as written.
    """
    if not model_args:
        return spec
    from dataclasses import replace

    merged = spec.kwargs
    for key, value in model_args.items():
        value = freeze(value)
        if key in merged and merged[key] != value:
            raise SpecError(f"model spec {spec.text!r} sets {key}={merged[key]!r} and model_args sets {key}={value!r}; "
                            "give it once")
        merged[key] = value
    return replace(spec, model_args=tuple(merged.items()))


def resolve_onnx_file(spec: ModelSpec, root: "str | Path") -> ModelSpec:
    """The spec with its ``@FILE`` made absolute against ``root`` (the gate: pytest's rootdir).

    The spec's ``text`` (the item's name) stays as written. Raises :class:`SpecError`
    naming the fix when the file does not exist.
    """
    if spec.onnx_file is None:
        return spec
    path = Path(spec.onnx_file).expanduser()
    if not path.is_absolute():
        path = Path(root) / path
    if not path.is_file():
        raise SpecError(f"model spec {spec.text!r}: ONNX file not found: {path}"
                        + (f" (relative paths resolve against pytest's rootdir {root})" if not Path(spec.onnx_file).is_absolute() else "")
                        + ". Give the path of the file to check, e.g. the artifact your export step wrote.")
    from dataclasses import replace

    return replace(spec, onnx_file=str(path))


def check_checkpoint(spec: ModelSpec) -> None:
    """Raise :class:`WeightsError` when the spec's checkpoint is missing or cannot be a checkpoint.

    Known without torch, so the gate and ``onnx-parity check`` refuse it up front as a usage
    error. The path is taken as :func:`~pytest_onnx_parity.load_model` takes it (``~`` expanded,
    relative to the working directory). Checked: the file exists and can be read, is not empty,
    and a ``.safetensors`` header or a zip checkpoint (torch's format since 1.6) is complete;
    loading the tensors is left to timm's loader.
    """
    if spec.weights_kind != "file":
        return
    from .ckptfiles import folder_hint, missing_hint

    path = Path(spec.weights).expanduser()
    fix = "Pass an existing .safetensors/.pth/.pth.tar/.bin file (a state dict in timm's naming)"
    if spec.onnx_file is None:  # random weights can never match a given file: offered only for the plugin's export
        fix += f", or use {spec.name}=random"
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        cwd = f" (relative to the working directory {Path.cwd()})" if not path.is_absolute() else ""
        where = folder_hint(path, spec.name, CHECKPOINT_SUFFIXES) if path.is_dir() else missing_hint(path, CHECKPOINT_SUFFIXES)
        raise WeightsError(f"checkpoint file {what}: {path}{cwd} (from spec {spec.text!r}). {where} {fix}")
    problem = _checkpoint_problem(path)
    if problem:
        raise WeightsError(f"checkpoint {path} (from spec {spec.text!r}) {problem}. {fix}")


def _checkpoint_problem(path: Path) -> str | None:
    import json
    import zipfile

    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
            if not head:
                return "is empty"
            if path.name.lower().endswith(".safetensors"):
                n = int.from_bytes(head, "little") if len(head) == 8 else -1
                if not 0 < n <= size - 8:
                    return "is not a safetensors file (its header is cut off or missing)"
                header = json.loads(fh.read(n))
                ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
                if 8 + n + max(ends, default=0) > size:
                    return f"is truncated ({size} bytes; its header describes {8 + n + max(ends)})"
            elif head.startswith(b"PK"):
                with zipfile.ZipFile(path) as zf:
                    zf.namelist()
    except PermissionError as exc:
        return f"cannot be read ({exc.strerror})"
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return "is not a safetensors file (its header is not valid)"
    except zipfile.BadZipFile:
        return "is truncated or damaged (an incomplete zip archive, torch.save's format)"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return None


def short_text(text: str) -> str:
    """``text`` (a spec) with its checkpoint and ``@FILE`` paths cut to their file names, for tables:
    ``vit=/ckpt/run7/vit.safetensors@/builds/42/model.onnx`` -> ``vit=vit.safetensors@model.onnx``.
    The JSON report keeps the spec as given. Text that is not a spec comes back as it is."""
    try:
        model_part, onnx_file = split_onnx_file(text)
    except SpecError:
        return text
    try:
        head, args_text, rest = split_args(model_part, text)
    except SpecError:
        return text
    name, sep, weights = rest.partition("=")
    if args_text is not None:
        name = f"{head}({args_text})"
    if sep and weights.strip() not in WEIGHT_KINDS:
        weights = Path(weights.strip()).name or weights
    return f"{name}{sep}{weights}" + (f"@{Path(onnx_file).name}" if onnx_file else "")


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
    if name.startswith("local-dir:"):
        folder = Path(name[len("local-dir:"):]).expanduser()
        if not (folder / "config.json").is_file():
            what = "is not a folder" if not folder.is_dir() else "has no config.json"
            raise SpecError(f"{name}: {folder} {what}; a local-dir: folder holds config.json and the weights as "
                            "timm's save_for_hf writes them (timm.models.save_for_hf(model, FOLDER))")
        return
    if name.startswith("hf-hub:"):
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
        if any(c in spec.name for c in "*?[") and spec.onnx_file is not None:
            raise SpecError(f"model spec {text!r}: a pattern cannot be checked against one ONNX file; "
                            "name the model the file was exported from")
        if any(c in spec.name for c in "*?["):
            import timm

            names = timm.list_models(spec.name) if "." not in spec.name else timm.list_pretrained(spec.name)
            if not names:
                raise SpecError(f"model pattern {spec.name!r} matches no timm model; see timm.list_models()")
            suffix = text.strip()[len(spec.name.strip()):] if "=" in text or "(" in text else ""
            expanded = [parse_spec(n + suffix.strip(), default_weights) for n in names]
        else:
            expanded = [spec]
        for s in expanded:
            if s.text not in seen:
                seen.add(s.text)
                out.append(s)
    return out


def preflight(spec: ModelSpec) -> None:
    """What the gate and ``onnx-parity check`` refuse before torch is imported: a missing or unreadable
    checkpoint, and a missing, unreadable or incomplete ``@FILE`` (made absolute already).
    Raises :class:`~pytest_onnx_parity.errors.OnnxParityError` (a usage error in both)."""
    check_checkpoint(spec)
    if spec.onnx_file is not None:
        from ..onnxfile.io import check_onnx_file

        check_onnx_file(spec.onnx_file)


def file_spec(model: str, onnx_file: "str | os.PathLike[str]", default_weights: str = "random") -> "ModelSpec":
    """The spec ``NAME[=WEIGHTS]@FILE`` of a file given apart from its model (as ``onnx-parity check`` takes them).

    Raises :class:`SpecError`, :class:`WeightsError` or :class:`OnnxFileError` (usage errors: known before
    running): the file and the checkpoint are checked first (:func:`preflight`, no torch), then the name
    (timm's registry, which imports torch).
    """
    from dataclasses import replace

    from ..onnxfile.io import onnx_file_path

    spec = parse_spec(model, default_weights=default_weights)
    if spec.onnx_file is not None:
        raise SpecError(f"--model {model!r}: give the ONNX file as the FILE argument, not as @FILE in the spec")
    path = onnx_file_path(onnx_file)
    spec = replace(spec, text=f"{spec.text}@{onnx_file}", onnx_file=str(path.resolve()))
    preflight(spec)
    check_model_name(spec.name)
    return spec
