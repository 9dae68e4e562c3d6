"""Shared test configuration: one export cache for the whole test session."""
from __future__ import annotations

import os

import pytest

# set before huggingface_hub is imported: it reads these once
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def pytest_configure(config: pytest.Config) -> None:
    """Import torch's exporters once, up front.

    In-process pytester runs drop the modules first imported inside them, and torch's export
    machinery registers global state on import (twice is an error), so whichever test file runs
    first must not be the one that first imports it.
    """
    import torch.export._trace  # noqa: F401
    import torch.onnx._internal.exporter._core  # noqa: F401


@pytest.fixture(scope="session")
def export_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An export cache shared by every test of the session (pytester runs included)."""
    return str(tmp_path_factory.mktemp("onnx-parity-cache"))


@pytest.fixture(autouse=True)
def _no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach the network: the hub is offline as in CI."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """timm's transform normalises with torch: one thread is 8x cheaper than two on a busy 2-core machine
    (the preprocessing tests use it for their module)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def photo_paths() -> list:
    """The bundled sample photos."""
    from pytest_onnx_parity.preprocessing.images import bundled_image_paths

    return bundled_image_paths()


@pytest.fixture(scope="module")
def photos(photo_paths: list) -> list:
    """The bundled photos, decoded as RGB PIL images."""
    from pytest_onnx_parity.preprocessing.decode import open_image

    return [open_image(p) for p in photo_paths]
