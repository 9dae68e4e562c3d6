"""The export cache: keyed, verified, atomic, and safe across processes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_onnx_parity import ExportError, export_onnx, load_model
from pytest_onnx_parity.onnxfile.cache import ExportCache, cache_key


def test_two_processes_export_once(tmp_path: Path) -> None:
    code = ("import sys; from pytest_onnx_parity import export_onnx;"
            "e = export_onnx('test_vit', exporter='torchscript', cache_dir=sys.argv[1]);"
            "print('HIT' if e.cache_hit else 'BUILT', e.path)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].split() for p in procs]
    assert sorted(o[0] for o in outs) == ["BUILT", "HIT"]
    assert outs[0][1] == outs[1][1]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_a_failed_export_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pytest_onnx_parity.onnxfile.export as export_mod

    def broken(model, target, **kwargs):  # writes half a file, then dies
        Path(target).write_bytes(b"\x08\x07half")
        raise ExportError("dynamo exporter failed: boom")

    monkeypatch.setattr(export_mod, "_export_to", broken)
    with pytest.raises(ExportError, match="boom"):
        export_onnx("test_vit", exporter="torchscript", cache_dir=tmp_path)
    left = [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")]
    assert left == []


def test_damaged_manifest_is_rebuilt(tmp_path: Path) -> None:
    first = export_onnx("test_vit", exporter="torchscript", cache_dir=tmp_path)
    manifest = first.path.parent / "manifest.json"
    manifest.write_text("{not json")
    second = export_onnx("test_vit", exporter="torchscript", cache_dir=tmp_path)
    assert not second.cache_hit and json.loads(manifest.read_text())["files"]
    third = export_onnx("test_vit", exporter="torchscript", cache_dir=tmp_path)
    assert third.cache_hit and third.path == first.path


def test_key_covers_what_changes_the_file(tmp_path: Path) -> None:
    from pytest_onnx_parity.model.build import load_model_record, loaded
    from pytest_onnx_parity.onnxfile.export import export_key_fields

    model = load_model_record("test_vit")
    base = export_key_fields(model, exporter="dynamo", opset=None, batch=2, seed=0)
    variants = [
        export_key_fields(model, exporter="torchscript", opset=None, batch=2, seed=0),
        export_key_fields(model, exporter="dynamo", opset=18, batch=2, seed=0),
        export_key_fields(load_model_record("test_vit", seed=1), exporter="dynamo", opset=None, batch=2, seed=1),
        export_key_fields(model, exporter="dynamo", opset=None, batch=3, seed=0),
    ]
    keys = {cache_key(base)} | {cache_key(v) for v in variants}
    assert len(keys) == 5
    assert set(base["versions"]) >= {"torch", "timm", "onnx", "onnxscript", "pytest-onnx-parity"}
    # a model object with other weights than its spec says is keyed by a hash of its weights
    import torch

    other = load_model("test_vit")  # a module alone: no record says how its weights were made
    with torch.no_grad():
        next(other.parameters()).mul_(2)
    assert export_key_fields(loaded(other), exporter="dynamo", opset=None, batch=2, seed=0)["weights"].startswith("sha256:")


def test_get_or_build_replaces_a_truncated_file(tmp_path: Path) -> None:
    cache = ExportCache(tmp_path)
    calls = []

    def build(folder: Path) -> dict:
        calls.append(1)
        (folder / "model.onnx").write_bytes(b"x" * 1000)
        return {}

    entry, _, hit = cache.get_or_build("k" * 64, "m", build)
    assert not hit
    (entry / "model.onnx").write_bytes(b"x" * 10)
    _, _, hit = cache.get_or_build("k" * 64, "m", build)
    assert not hit and len(calls) == 2 and (entry / "model.onnx").stat().st_size == 1000
    _, _, hit = cache.get_or_build("k" * 64, "m", build)
    assert hit and len(calls) == 2
