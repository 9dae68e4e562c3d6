"""Pretrained weights from the Hugging Face hub, failing fast when it cannot be reached.

Offline, ``timm.create_model(NAME, pretrained=True)`` lets ``huggingface_hub`` retry each file
five times with backoff: 20 "Retrying" lines and 53 to 84 s (measured on two machines without a
route to the hub) before its "cannot find the requested files" error. :func:`load_pretrained` instead

1. respects ``HF_HUB_OFFLINE`` (the hub then answers from its cache at once, or fails at once);
2. tries the local cache first, with the hub switched to offline mode for that one attempt
   (no request is sent; a cached model loads without the network);
3. probes the hub with one request and a short timeout (:data:`PROBE_TIMEOUT_S`), through
   ``huggingface_hub``'s own HTTP client (its proxy and certificate settings): unreachable means one
   :class:`HubUnreachable` naming the endpoint, the reason and the cache folder;
4. reachable: the real loading path, timm's own, with the hub's retry warnings silenced (a final
   error still says what went wrong).

Nothing here imports ``huggingface_hub`` at module import; without it installed, ``create`` runs as is.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..errors import OnnxParityError

T = TypeVar("T")
PROBE_TIMEOUT_S = 3.0
_RETRY_LOGGERS = ("huggingface_hub.utils._http", "huggingface_hub.file_download")


class HubUnreachable(OnnxParityError):
    """The hub cannot be reached and the weights are not in the local cache."""


def _hub() -> Any:
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - timm without huggingface_hub loads by URL only
        return None
    return constants


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) as the hub reads it, or as set since it was imported."""
    constants = _hub()
    env = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").strip().upper()
    return env in ("1", "ON", "YES", "TRUE") or bool(constants is not None and constants.HF_HUB_OFFLINE)


@contextlib.contextmanager
def cache_only() -> Iterator[None]:
    """The hub in offline mode for the block: answers come from the local cache, no request is sent."""
    constants = _hub()
    if constants is None:  # pragma: no cover
        yield
        return
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


@contextlib.contextmanager
def quiet_retries() -> Iterator[None]:
    """The hub's "Retrying in 1s [Retry 1/5]" warnings silenced for the block (errors still raise)."""
    loggers = [logging.getLogger(name) for name in _RETRY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def endpoint() -> str:
    constants = _hub()
    return str(getattr(constants, "ENDPOINT", None) or "https://huggingface.co")


def cache_folder() -> str:
    constants = _hub()
    return str(getattr(constants, "HF_HUB_CACHE", None) or "~/.cache/huggingface/hub")


def unreachable(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the hub cannot be reached (one HEAD request, ``timeout`` seconds), or None when it answers.

    Any HTTP answer, an error status included, means reachable: the real path then says what is wrong.
    """
    from .privates import hub_session

    try:
        session = hub_session()
        if session is None:  # pragma: no cover - no huggingface_hub: nothing to probe with
            return None
        session.head(endpoint(), timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - connection, DNS, proxy, TLS and timeout errors of any HTTP stack
        text = " ".join(str(exc).split()) or "no answer"
        return f"{type(exc).__name__}: {text[:200]}"
    return None


_MISSING = object()


def _attempt(create: Callable[[], T]) -> T | object:
    """``create()`` answered from the local cache, or :data:`_MISSING` when it needs the hub (or fails)."""
    try:
        with cache_only():
            return create()
    except Exception:  # noqa: BLE001 - not cached (LocalEntryNotFoundError, OfflineModeIsEnabled, ...): go online
        return _MISSING


def load_pretrained(create: Callable[[], T], name: str) -> T:
    """``create()`` (timm's pretrained loading of ``name``), failing fast when the hub is out of reach.

    See the module docstring. Raises :class:`HubUnreachable` when the weights are neither cached nor
    reachable; any other error is ``create``'s own.
    """
    if _hub() is None or hub_offline():
        return create()  # offline: the hub answers from its cache or fails at once, without retries
    cached = _attempt(create)
    if cached is not _MISSING:
        return cached  # type: ignore[return-value]
    why = unreachable()
    if why is not None:
        raise HubUnreachable(
            f"the Hugging Face hub ({endpoint()}) cannot be reached ({why}; probed with a {PROBE_TIMEOUT_S:g} s "
            f"timeout) and the weights of {name!r} are not in the local cache ({cache_folder()})")
    with quiet_retries():
        return create()


def hub_error(name: str, what: str, exc: BaseException) -> OnnxParityError:
    """The error for ``what`` (the config.json, the weights) of an ``hf-hub:`` model that could not be fetched."""
    from ..errors import WeightsError

    reason = " ".join(str(exc).split())[:300]
    return WeightsError(
        f"could not fetch {what} of {name} ({type(exc).__name__}: {reason}). Offline, download the model once "
        "(the hub's cache is used afterwards), or save it to a folder and use local-dir:FOLDER "
        "(timm.models.save_for_hf(model, FOLDER))")
