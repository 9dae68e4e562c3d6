"""``NAME=pretrained`` without a route to the hub: one clear message in seconds, not 20 "Retrying" lines.

No test reaches the network. conftest sets ``HF_HUB_OFFLINE=1`` before ``huggingface_hub`` is imported,
so its ``constants.HF_HUB_OFFLINE`` is True here: the tests of the online path switch it off and put
a stand-in HTTP client (every request fails to connect, as on a machine without a route) under
``huggingface_hub``'s own retry loop, whose sleeps are skipped.
"""
from __future__ import annotations

import logging
import time
import types
from pathlib import Path
from typing import Any

import pytest

from pytest_onnx_parity.model import hub


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """The hub in online mode with an empty cache, every request refused; returns the URLs asked for."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    asked: list[str] = []

    def refuse(request: Any) -> Any:
        asked.append(str(request.url))
        raise httpx2.ConnectError("[Errno -2] Name or service not known", request=request)

    # as huggingface_hub's own client (default_client_factory): its hook refuses requests in offline mode
    client = httpx2.Client(transport=httpx2.MockTransport(refuse), event_hooks={"request": [_http.hf_request_event_hook]},
                           follow_redirects=True)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(_http, "get_session", lambda: client)
    monkeypatch.setattr(_http, "time", types.SimpleNamespace(sleep=lambda s: None))  # the backoff's waits
    return asked


def test_pretrained_without_a_route_to_the_hub_fails_fast_with_one_message(
        online: list[str], caplog: pytest.LogCaptureFixture) -> None:
    from pytest_onnx_parity import load_model
    from pytest_onnx_parity.errors import WeightsError

    caplog.set_level(logging.INFO)
    t = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        load_model("test_resnet=pretrained")
    elapsed = time.perf_counter() - t
    msg = str(info.value)
    assert msg.startswith("could not fetch pretrained weights for 'test_resnet': the Hugging Face hub")
    assert "cannot be reached (ConnectError: [Errno -2] Name or service not known" in msg
    assert "not in the local cache" in msg and "test_resnet=random" in msg and "HF_HUB_OFFLINE=1" in msg
    assert len(online) == 1, online  # the probe: the cache was tried without a request, the retry loop never ran
    assert not [r for r in caplog.records if "Retrying" in r.getMessage() or "thrown while" in r.getMessage()]
    assert elapsed < 10, f"{elapsed:.1f} s"


def test_hf_hub_offline_is_respected_without_a_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "unreachable", lambda *a: pytest.fail("probed the hub in offline mode"))
    assert hub.load_pretrained(lambda: calls.append(True) or "model", "m") == "model"
    assert calls == [True]


def test_a_cached_model_loads_without_the_network(online: list[str]) -> None:
    from huggingface_hub import constants

    seen: list[bool] = []
    assert hub.load_pretrained(lambda: seen.append(constants.HF_HUB_OFFLINE) or "model", "m") == "model"
    assert seen == [True] and online == []  # answered from the cache, in offline mode, nothing asked
    assert constants.HF_HUB_OFFLINE is False  # and the mode restored


def test_a_reachable_hub_takes_the_real_path_with_its_retry_warnings_silenced(
        online: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(hub, "unreachable", lambda *a: None)
    seen: list[tuple[bool, int]] = []

    def create() -> str:
        seen.append((constants.HF_HUB_OFFLINE, logging.getLogger("huggingface_hub.utils._http").getEffectiveLevel()))
        if len(seen) == 1:
            raise OSError("not in the cache")  # what the cache-only attempt meets
        return "model"

    assert hub.load_pretrained(create, "m") == "model"
    assert [offline for offline, _ in seen] == [True, False]  # the cache first, then the hub itself
    assert seen[1][1] >= logging.ERROR
    assert logging.getLogger("huggingface_hub.utils._http").level == logging.NOTSET  # restored


def test_the_probe_says_why_and_an_answer_means_reachable(online: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx2
    from huggingface_hub.utils import _http

    assert "ConnectError" in (hub.unreachable(0.5) or "")
    answering = httpx2.Client(transport=httpx2.MockTransport(lambda request: httpx2.Response(404)),
                              event_hooks={"request": [_http.hf_request_event_hook]})
    monkeypatch.setattr(_http, "get_session", lambda: answering)
    assert hub.unreachable(0.5) is None  # any HTTP answer: the real path says what is wrong


@pytest.mark.parametrize("before", [False, True])
def test_offline_mode_is_scoped_to_the_cache_attempt(before: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache-only attempt switches the hub offline for that one call and puts back the value it found,
    when the attempt fails too (not cached); nothing is written to the environment."""
    import os

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", before)
    env = os.environ.get("HF_HUB_OFFLINE")
    seen: list[bool] = []

    def not_cached() -> str:
        seen.append(constants.HF_HUB_OFFLINE)
        raise OSError("not in the cache")

    assert hub._attempt(not_cached) is hub._MISSING
    assert seen == [True] and constants.HF_HUB_OFFLINE is before and os.environ.get("HF_HUB_OFFLINE") == env
    with pytest.raises(KeyError), hub.cache_only():
        assert constants.HF_HUB_OFFLINE is True
        raise KeyError("any error")
    assert constants.HF_HUB_OFFLINE is before
