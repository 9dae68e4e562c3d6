"""Golden references (``--onnx-parity-golden``): recorded when missing, then each side compared with its own.

The issue's "done when", one test each: an unchanged rerun passes; a model whose forward changed (timm's
code patched, the file exported afresh) passes parity and fails ``golden`` naming the torch side; a file
changed after recording fails ``golden`` naming the ONNX side; a missing golden is recorded and the check
skipped saying where; a corrupt golden is an error naming the file. Then the keys, the update flag and the
gate (twice: records, then passes).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pytest_onnx_parity import check_parity, load_model_record

FAST = {"layers": "never", "real_images": False}  # the golden check reads the random batch's outputs only


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    # with its record: the golden key names the spec's seeded weights, as `onnx-parity check --model test_resnet` does
    return load_model_record("test_resnet")


def _golden(result):  # type: ignore[no-untyped-def]
    check = result.check("golden")
    assert check is not None, [c.name for c in result.checks]
    return check


def test_a_missing_golden_is_recorded_and_an_unchanged_rerun_passes(tmp_path: Path, export_cache: str) -> None:
    first = check_parity("test_resnet", golden=str(tmp_path), cache_dir=export_cache, **FAST)
    recorded = _golden(first)
    assert recorded.status == "skipped" and first.status == "passed"
    path = Path(recorded.details["path"])
    assert recorded.message.startswith("no golden for test_resnet") and f"recorded one at {path}" in recorded.message
    assert "commit it" in recorded.message and path.parent == tmp_path and path.name.startswith("test_resnet-")
    doc = json.loads(path.read_text())
    assert set(doc["recorded"]["versions"]) >= {"python", "torch", "timm", "onnx", "onnxruntime"}
    assert doc["key"]["weights"].startswith("random:seed=0") and "threads=" not in doc["key"]["weights"]
    assert "threads=" in doc["recorded"]["weights_identity"]  # the identity is kept, the key leaves the count out
    assert doc["key"]["data_config"]["input_size"] == [3, 160, 160] and doc["inputs"]["shape"] == [2, 3, 160, 160]
    assert path.stat().st_size < 64_000  # no weights, no pixels: outputs of a small batch
    again = check_parity("test_resnet", golden=str(tmp_path), cache_dir=export_cache, **FAST)
    check = _golden(again)
    assert check.status == "passed" and again.status == "passed", check.message
    assert check.details["torch_max_abs_diff"] == 0.0 and check.details["onnx_max_abs_diff"] == 0.0
    assert "both sides reproduce the golden" in check.message and "torch 2." in check.message
    assert [c.name for c in again.checks][-1] == "golden"
    assert "golden" not in [c.name for c in check_parity("test_resnet", cache_dir=export_cache, **FAST).checks]


def test_a_changed_forward_passes_parity_and_fails_the_golden_naming_torch(
        model, tmp_path: Path, export_cache: str, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import timm.models.resnet

    assert check_parity(model, golden=str(tmp_path), cache_dir=export_cache, **FAST).check("golden").status == "skipped"
    block, forward = model.module.layer2[0], timm.models.resnet.BasicBlock.forward

    def scaled(self, x):  # type: ignore[no-untyped-def]  # a release that changed one layer
        out = forward(self, x)
        return out * 1.01 if self is block else out

    monkeypatch.setattr(timm.models.resnet.BasicBlock, "forward", scaled)
    changed = check_parity(model, golden=str(tmp_path), use_cache=False, **FAST)  # the file exported afresh
    statuses = {c.name: c.status for c in changed.checks}
    assert statuses["logits"] == statuses["topk"] == statuses["weights"] == "passed"
    check = _golden(changed)
    assert check.status == "failed" and changed.status == "failed"
    assert check.message.startswith("torch side changed since the golden recorded with timm ")
    assert "max abs diff" in check.message and "The ONNX side moved too" in check.message
    assert check.details["moved"] == ["torch", "onnx"] and "--onnx-parity-golden-update" in check.message
    # the change is intended: update, then the rerun passes
    updated = _golden(check_parity(model, golden=str(tmp_path), use_cache=False, golden_update=True, **FAST))
    assert updated.status == "skipped" and updated.message.startswith("rewrote the golden")
    assert _golden(check_parity(model, golden=str(tmp_path), use_cache=False, **FAST)).status == "passed"


def test_a_file_changed_after_recording_fails_the_golden_naming_onnx(model, tmp_path: Path, export_cache: str) -> None:  # type: ignore[no-untyped-def]
    import onnx

    from pytest_onnx_parity import export_onnx
    from pytest_onnx_parity.testing import scale_layer_weights

    shipped = tmp_path / "dist" / "model.onnx"
    shipped.parent.mkdir()
    shutil.copyfile(export_onnx(model, cache_dir=export_cache).path, shipped)
    golden = str(tmp_path / "golden")
    assert _golden(check_parity(model, onnx=shipped, golden=golden, **FAST)).status == "skipped"
    # the shell takes the gate's options: the same key, so it compares with that golden
    from pytest_onnx_parity.__main__ import main

    report = tmp_path / "r.json"
    assert main(["check", str(shipped), "--model", "test_resnet", f"--golden={golden}", "--layers=never",
                 f"--report={report}"]) == 0
    assert {c["name"]: c["status"] for c in json.loads(report.read_text())["models"][0]["checks"]}["golden"] == "passed"
    onnx.save(scale_layer_weights(model.module, shipped, "layer2.0.conv2", 1.001), str(shipped))
    result = check_parity(model, onnx=shipped, golden=golden, **FAST)
    check = _golden(result)
    assert check.status == "failed" and result.status == "failed"
    assert check.message.startswith("ONNX side changed since the golden recorded with onnxruntime ")
    assert "The torch side reproduces its golden (max abs diff 0 " in check.message
    assert check.details["moved"] == ["onnx"] and check.details["torch_max_abs_diff"] == 0.0


def test_a_golden_recorded_elsewhere_is_judged_at_the_looser_tolerance(tmp_path: Path, export_cache: str) -> None:
    from pytest_onnx_parity.tolerances import golden_tolerance

    path = Path(_golden(check_parity("test_resnet", golden=str(tmp_path), cache_dir=export_cache, **FAST)).details["path"])
    here = _golden(check_parity("test_resnet", golden=str(tmp_path), cache_dir=export_cache, **FAST))
    assert here.details["tolerance"] == list(golden_tolerance(True))
    doc = json.loads(path.read_text())
    doc["recorded"]["torch_threads"] += 1  # another thread count (or CPU, or versions): rounding may differ
    path.write_text(json.dumps(doc))
    there = _golden(check_parity("test_resnet", golden=str(tmp_path), cache_dir=export_cache, **FAST))
    assert there.status == "passed" and there.details["tolerance"] == list(golden_tolerance(False))
    assert golden_tolerance(True) < golden_tolerance(False)


def test_a_corrupt_golden_is_an_error_naming_the_file(tmp_path: Path, export_cache: str) -> None:
    recorded = _golden(check_parity("test_resnet", golden=str(tmp_path), cache_dir=export_cache, **FAST))
    path = Path(recorded.details["path"])
    for broken in ("{not json", json.dumps({"format": 1, "key": {}})):
        path.write_text(broken)
        result = check_parity("test_resnet", golden=str(tmp_path), cache_dir=export_cache, **FAST)
        check = _golden(result)
        assert check.status == "error" and result.status == "error"
        assert check.message.startswith(f"golden file {path} cannot be read (") and "--onnx-parity-golden-update" in check.message
        assert str(path) in result.error


def test_keys_never_compare_another_runs_golden(tmp_path: Path) -> None:
    """Another spec, other weights, another variant or data config: another file (no model needed)."""
    from pytest_onnx_parity.report.golden import golden_key, golden_path, weights_key

    base = {"model": "resnet18", "weights": "random:seed=0:nondegenerate-v5", "variant": {"exporter": "dynamo", "opset": None},
            "data_config": {"input_size": [3, 224, 224], "crop_pct": 0.875}, "seed": 0, "batch": [2, 3, 224, 224],
            "file": None, "output": None, "cpu": None}
    path = golden_path(tmp_path, golden_key(**base))
    assert golden_path(tmp_path, golden_key(**{**base, "data_config": {"crop_pct": 0.875, "input_size": (3, 224, 224)}})) == path
    for other in ({"model": "resnet18(num_classes=0)"}, {"weights": "sha256:0123"},
                  {"variant": {"exporter": "torchscript", "opset": None}}, {"data_config": {"input_size": [3, 224, 224],
                                                                                            "crop_pct": 0.9}},
                  {"seed": 1}, {"file": "dist/model.onnx"}):
        assert golden_path(tmp_path, golden_key(**{**base, **other})) != path, other
    assert weights_key("random:seed=0:nondegenerate-v5:threads=8") == weights_key("random:seed=0:nondegenerate-v5:threads=2")


def test_another_variant_records_its_own_golden(tmp_path: Path, export_cache: str) -> None:
    assert _golden(check_parity("test_resnet", golden=str(tmp_path), cache_dir=export_cache, **FAST)).status == "skipped"
    other = _golden(check_parity("test_resnet", golden=str(tmp_path), cache_dir=export_cache, ort_opt="disabled", **FAST))
    assert other.status == "skipped" and other.message.startswith("no golden for test_resnet")
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_update_without_a_folder_is_refused(pytester: pytest.Pytester) -> None:
    from pytest_onnx_parity.errors import SpecError
    from pytest_onnx_parity.options import ParityOptions

    with pytest.raises(SpecError, match="golden=DIR"):
        ParityOptions.from_kwargs(golden_update=True)
    result = pytester.runpytest("--onnx-parity", "--onnx-parity-golden-update", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--onnx-parity-golden-update rewrites the goldens of a folder" in result.stderr.str()


def test_the_gate_records_goldens_then_compares_with_them(pytester: pytest.Pytester, export_cache: str) -> None:
    import torch  # noqa: F401  (loaded before the in-process runs)

    golden = pytester.path / "goldens"
    args = ["--onnx-parity", "--onnx-parity-models=test_resnet", f"--onnx-parity-golden={golden}",
            f"--onnx-parity-cache-dir={export_cache}", "--onnx-parity-layers=never", "-p", "no:cacheprovider"]

    def gate(*more: str) -> list[dict]:
        result = pytester.runpytest_inprocess(*args, *more, "--onnx-parity-report=r.json")
        result.assert_outcomes(passed=1)
        return json.loads((pytester.path / "r.json").read_text())["models"][0]["checks"]

    first = {c["name"]: c for c in gate()}
    assert first["golden"]["status"] == "skipped" and "recorded one at" in first["golden"]["message"]
    assert [p.name for p in golden.iterdir()] == [Path(first["golden"]["path"]).name]
    second = {c["name"]: c for c in gate()}
    assert second["golden"]["status"] == "passed" and second["golden"]["onnx_max_abs_diff"] == 0.0
    before = Path(first["golden"]["path"]).read_bytes()
    updated = {c["name"]: c for c in gate("--onnx-parity-golden-update")}
    assert updated["golden"]["status"] == "skipped" and updated["golden"]["message"].startswith("rewrote the golden")
    assert Path(first["golden"]["path"]).read_bytes() == before  # an unchanged model writes the same bytes
