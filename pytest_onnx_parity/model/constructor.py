"""``timm.create_model`` for a spec, with the errors a user can act on: an argument the architecture does
not take (named, with the model), an ``hf-hub:`` config or pretrained weights that cannot be fetched
(one message, in seconds when offline: :mod:`.hub`), anything else timm refuses (its first line).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import OnnxParityError, SpecError, WeightsError
from ..specs import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch


def check_model_args(spec: ModelSpec) -> None:
    """Raise :class:`SpecError` naming the argument when the architecture rejects one of the spec's
    ``NAME(ARGS)`` (known before any item runs: the model is built on the meta device, without memory or
    weights). Other failures are left to the run, which reports them with the model."""
    if not spec.model_args or spec.name.startswith(("hf-hub:", "local-dir:")):
        return
    import timm
    import torch

    try:
        with torch.device("meta"):
            create(timm, spec, pretrained=False, **spec.kwargs)
    except SpecError as exc:
        if "does not take the model argument" in str(exc):
            raise
    except Exception:  # noqa: BLE001 - an init that cannot run on the meta device: the run builds it for real
        pass


def create(timm: Any, spec: ModelSpec, **kwargs: Any) -> "torch.nn.Module":
    try:
        return timm.create_model(spec.name, **kwargs)
    except OnnxParityError:
        raise
    except Exception as exc:  # noqa: BLE001 - sorted below; an hf-hub: name first fetches its config.json
        if not spec.name.startswith("hf-hub:") or isinstance(exc, TypeError):
            return _create_failed(spec, exc)
        from .hub import hub_error

        raise hub_error(spec.name, "the config.json", exc) from None


def _create_failed(spec: ModelSpec, exc: Exception) -> "torch.nn.Module":
    import re

    if isinstance(exc, TypeError):
        m = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if m:
            raise SpecError(f"{spec.name} does not take the model argument {m.group(1)!r} (spec {spec.text!r}); remove "
                            f"it, or check the arguments of timm's {spec.architecture} constructor") from None
        raise SpecError(f"timm could not build {spec.label!r}: {type(exc).__name__}: {exc}") from exc
    args = f" with {', '.join(f'{k}={v!r}' for k, v in spec.kwargs.items())}" if spec.kwargs else ""
    raise SpecError(f"timm could not build {spec.name!r}{args} (spec {spec.text!r}): {type(exc).__name__}: "
                    f"{first_line(exc)}") from exc


def create_pretrained(timm: Any, spec: ModelSpec, **kwargs: Any) -> "torch.nn.Module":
    from .hub import HubUnreachable, load_pretrained

    try:  # the local cache first; an unreachable hub fails in seconds with one message (model/hub.py)
        return load_pretrained(lambda: timm.create_model(spec.name, pretrained=True, **kwargs), spec.name)
    except HubUnreachable as exc:
        raise WeightsError(
            f"could not fetch pretrained weights for {spec.name!r}: {exc}. Offline, use {spec.name}=random, or "
            f"download the weights once and pass a local file: {spec.name}=/path/to/model.safetensors "
            "(HF_HUB_OFFLINE=1 skips the hub probe)") from None
    except TypeError as exc:
        raise SpecError(f"timm could not build {spec.label!r}: {exc}") from exc
    except Exception as exc:  # network errors come in many types (OSError, httpx, hf_hub)
        raise WeightsError(
            f"could not fetch pretrained weights for {spec.name!r} ({type(exc).__name__}: {first_line(exc)}). "
            f"Offline, use {spec.name}=random, or download the weights once and pass a local file: "
            f"{spec.name}=/path/to/model.safetensors"
        ) from exc


def first_line(exc: BaseException, limit: int = 400) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    return line[:limit] + ("..." if len(line) > limit else "")
