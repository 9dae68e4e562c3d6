"""--onnx-parity-preprocess through the gate: each deployment pipeline is an axis value, its tensors go end to end
through the file (real_images) and against timm's transform (preprocessing, with its diagnosis); a command gets the
callable's verdict; a spec that names nothing is a usage error before anything runs."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).parent / "deploy"


def _gate(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    import torch  # noqa: F401  (loaded before the in-process run)

    shutil.copy(DEPLOY / "pipelines.py", pytester.path / "pipelines.py")
    shutil.copy(DEPLOY / "prep_cli.py", pytester.path / "prep_cli.py")
    return pytester.runpytest("--onnx-parity", "--onnx-parity-models=test_resnet", "--onnx-parity-exporter=torchscript",
                              "--onnx-parity-layers=never", "--onnx-parity-report=r.json", "-p", "no:cacheprovider",
                              *args)


def _entries(pytester: pytest.Pytester) -> dict[str, dict]:
    doc = json.loads((pytester.path / "r.json").read_text())
    return {e["variant"]["preprocess"]: e for e in doc["models"]}


def test_each_pipeline_is_an_item_judged_end_to_end_and_diagnosed(pytester: pytest.Pytester) -> None:
    command = f"command:{sys.executable} prep_cli.py {{images}} {{output}} {{config}} bgr"
    result = _gate(pytester, f"--onnx-parity-preprocess=pipelines:faithful,pipelines:bgr,{command}")
    result.assert_outcomes(passed=1, failed=2)
    entries = _entries(pytester)
    assert set(entries) == {"pipelines:faithful", "pipelines:bgr", command}
    faithful = {c["name"]: c for c in entries["pipelines:faithful"]["checks"]}
    assert faithful["preprocessing"]["status"] == "passed" and faithful["real_images"]["status"] == "passed"
    assert faithful["real_images"]["preprocess"] == "pipelines:faithful"
    for spec in ("pipelines:bgr", command):  # the command gets the callable's verdict
        checks = {c["name"]: c for c in entries[spec]["checks"]}
        pre = checks["preprocessing"]
        assert pre["status"] == "failed", pre["message"]
        fields = [f["field"] for f in pre["diagnosis"]]
        assert fields and fields[0] == "channel_order", fields
        assert checks["logits"]["status"] == "passed"  # the graph is right: what differs is the preprocessing
    assert "onnx-parity[test_resnet-pipelines:bgr] F" in result.stdout.str()


def test_a_preprocess_spec_that_names_nothing_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = _gate(pytester, "--onnx-parity-preprocess=pipelines:no_such_function")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--onnx-parity-preprocess" in result.stderr.str() and "no_such_function" in result.stderr.str()
    result = _gate(pytester, "--onnx-parity-preprocess=nonsense")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
