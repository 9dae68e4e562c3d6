"""Simplifiers as a matrix axis: onnxslim and onnx-simplifier runs of the one export, one item each,
skipped when absent, and a simplified file that departs blamed on the simplifier.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_onnx_parity import check_parity

pytest.importorskip("onnxslim")
pytest.importorskip("onnxsim")


@pytest.fixture(autouse=True, scope="module")
def _preload_heavy_libraries() -> None:
    """pytester runs in-process: torch and onnxruntime must be imported out here first."""
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import onnxsim  # noqa: F401
    import onnxslim  # noqa: F401
    import timm  # noqa: F401


def test_gate_runs_each_simplifier_as_an_item_and_they_pass(pytester: pytest.Pytester, export_cache: str) -> None:
    report = pytester.path / "r.json"
    result = pytester.runpytest_inprocess(
        "--onnx-parity", "--onnx-parity-models=resnet18,vit_tiny_patch16_224", "--onnx-parity-simplifier=onnxslim,onnxsim",
        f"--onnx-parity-cache-dir={export_cache}", f"--onnx-parity-report={report}", "-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*onnx-parity?resnet18-onnxslim?*PASSED*", "*onnx-parity?resnet18-onnxsim?*PASSED*",
                                 "*onnx-parity?vit_tiny_patch16_224-onnxslim?*PASSED*",
                                 "*onnx-parity?vit_tiny_patch16_224-onnxsim?*PASSED*"])
    entries = json.loads(report.read_text())["models"]
    assert sorted((e["model"], e["variant"]["simplifier"]) for e in entries) == [
        ("resnet18", "onnxsim"), ("resnet18", "onnxslim"), ("vit_tiny_patch16_224", "onnxsim"),
        ("vit_tiny_patch16_224", "onnxslim")]
    for e in entries:  # the simplified files keep their module scopes: the per-layer check still maps them
        layers = next(c for c in e["checks"] if c["name"] == "layers")
        assert layers["status"] == "passed", layers["message"]


def test_the_simplified_file_is_cached_and_keeps_the_exports_metadata(export_cache: str) -> None:
    from pytest_onnx_parity import read_data_config
    from pytest_onnx_parity.onnxfile.io import read_metadata

    first = check_parity("resnet18", simplifier="onnxslim", cache_dir=export_cache, layers="never")
    again = check_parity("resnet18", simplifier="onnxslim", cache_dir=export_cache, layers="never")
    assert first.passed and again.passed and again.cache_hit
    assert read_data_config(again.onnx_path) == again.data_config
    assert read_metadata(again.onnx_path)["onnx_parity.simplifier"].startswith("onnxslim ")


def test_an_absent_simplifier_is_skipped_with_the_install_that_fixes_it(monkeypatch: pytest.MonkeyPatch,
                                                                        export_cache: str) -> None:
    from pytest_onnx_parity.onnxfile import simplify

    monkeypatch.setitem(simplify.SIMPLIFIER_PACKAGES, "onnxsim", ("onnxsim_not_installed_here", "pip install onnxsim"))
    r = check_parity("resnet18", simplifier="onnxsim", cache_dir=export_cache)
    assert r.status == "skipped" and "simplifier onnxsim is not installed: pip install onnxsim" in r.error
    assert r.to_dict()["variant"]["simplifier"] == "onnxsim"


def test_a_simplifier_that_changes_the_result_is_blamed_and_the_module_named(monkeypatch: pytest.MonkeyPatch,
                                                                             tmp_path: Path) -> None:
    """A simplifier bug, planted: after onnxslim runs, one conv's weight is scaled by 1.05."""
    import onnx

    from pytest_onnx_parity import load_model
    from pytest_onnx_parity.onnxfile import simplify
    from pytest_onnx_parity.testing import scale_layer_weights

    real = simplify.simplify

    def buggy(src: Path, dst: Path, name: str) -> None:
        real(src, dst, name)
        onnx.save(scale_layer_weights(load_model("resnet18"), dst, "layer3.0.conv2", 1.05), str(dst))

    monkeypatch.setattr(simplify, "simplify", buggy)
    r = check_parity("resnet18", simplifier="onnxslim", exporter="torchscript", cache_dir=str(tmp_path))
    assert r.status == "failed"
    logits = r.check("logits")
    assert logits.status == "failed" and logits.details["blame"] == "simplifier"
    assert logits.message.startswith("Blame: the simplifier (onnxslim ")
    assert r.first_divergence is not None and r.first_divergence.startswith("layer3.0")


def test_a_difference_that_was_there_before_the_simplifier_is_not_blamed_on_it(monkeypatch: pytest.MonkeyPatch,
                                                                              tmp_path: Path) -> None:
    """The fault is in the export itself (planted in the unsimplified file before the simplifier runs)."""
    import onnx

    from pytest_onnx_parity import load_model
    from pytest_onnx_parity.onnxfile import simplify
    from pytest_onnx_parity.testing import scale_layer_weights

    real = simplify.simplify

    def on_a_broken_export(src: Path, dst: Path, name: str) -> None:
        onnx.save(scale_layer_weights(load_model("resnet18"), src, "layer3.0.conv2", 1.05), str(src))
        real(src, dst, name)

    monkeypatch.setattr(simplify, "simplify", on_a_broken_export)
    r = check_parity("resnet18", simplifier="onnxsim", exporter="torchscript", cache_dir=str(tmp_path), layers="never")
    logits = r.check("logits")
    assert r.status == "failed" and "blame" not in logits.details
    assert "fails too" in logits.message and "not the simplifier's" in logits.message


def test_a_file_made_elsewhere_is_checked_as_it_is(export_cache: str) -> None:
    ok = check_parity("resnet18", simplifier="onnxslim", cache_dir=export_cache, layers="never")
    assert ok.passed and "blame" not in ok.check("logits").details  # nothing failed: nothing to blame
    given = check_parity("resnet18", onnx=ok.onnx_path, simplifier="onnxslim")
    assert given.status == "skipped" and "checked as it is" in given.error
