"""Shared test configuration: one export cache for the whole test session; every report a test writes is
validated against docs/report.schema.json."""
from __future__ import annotations

import os
from typing import Iterator

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


class ReportsWritten:
    """The reports (and side files) the package wrote during one test, each validated as it was written."""

    def __init__(self) -> None:
        self.checked: list[str] = []
        self.problems: list[str] = []

    def validate(self, path: "os.PathLike[str] | str", data: "str | bytes") -> None:
        import json

        from pytest_onnx_parity.report.schema import ReportError, validate_report

        if not str(path).endswith(".json"):
            return
        try:
            doc = json.loads(data)
        except ValueError:
            return
        side = str(path).endswith(".layers.json") and isinstance(doc, dict) and "report" in doc
        if not side and not (isinstance(doc, dict) and "schema" in doc and isinstance(doc.get("models"), list)):
            return  # not a report: a cache entry, a golden reference
        try:
            validate_report(doc, side_file=side)
        except ReportError as exc:
            self.problems.append(f"{path}: {exc}")
        self.checked.append(str(path))


@pytest.fixture(autouse=True)
def reports_written(monkeypatch: pytest.MonkeyPatch) -> "Iterator[ReportsWritten]":
    """Every report the package writes in a test (the gate's, ``onnx-parity check --report``, ``merge -o``; in-process
    pytester runs included) is validated against the JSON Schema as it is written: they all go through
    ``files.write_atomic``, which ``report.schema.write_json`` looks up on each call. A report that does not follow
    it fails the test that wrote it, at teardown (raising inside the writer would only show as an internal error of
    an inner pytest run)."""
    from pytest_onnx_parity import files

    seen = ReportsWritten()
    original = files.write_atomic

    def write_atomic(path: "os.PathLike[str] | str", text: "str | bytes") -> None:
        original(path, text)
        seen.validate(path, text)

    monkeypatch.setattr(files, "write_atomic", write_atomic)
    yield seen
    if seen.problems:
        pytest.fail("a report does not follow docs/report.schema.json:\n" + "\n".join(seen.problems), pytrace=False)


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
