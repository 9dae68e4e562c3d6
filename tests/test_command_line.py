"""The command line's own rules: what ``onnx-parity check`` offers and refuses, what ``stamp`` refuses."""
from __future__ import annotations

import pytest

from pytest_onnx_parity.__main__ import main

#: options that shape an export the plugin makes; ``check`` takes a file as it was made
EXPORT_ONLY = ("exporter", "opset", "simplifier", "embed-preprocessing", "cache-dir", "no-cache")


def test_check_help_lists_only_what_applies_to_a_given_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--help"]) == 0
    text = capsys.readouterr().out
    for noun in EXPORT_ONLY:
        assert f"--{noun}" not in text and f"--onnx-parity-{noun}" not in text, noun
    for noun in ("image-size", "layers", "precision", "atol", "data-config", "weight-set", "golden"):
        assert f"--{noun}" in text, noun


@pytest.mark.parametrize(("argv", "noun"), [
    (["--exporter", "torchscript"], "exporter"), (["--onnx-parity-opset=17"], "opset"),
    (["--simplifier", "onnxslim"], "simplifier"), (["--embed-preprocessing"], "embed-preprocessing"),
    (["--cache-dir", "/tmp/c"], "cache-dir"), (["--no-cache"], "no-cache"),
])
def test_check_refuses_an_export_option_naming_it(argv: list[str], noun: str, tmp_path: object,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "m.onnx", "--model", "resnet18", *argv]) == 2
    err = capsys.readouterr().err
    assert f"onnx-parity check: error: --{noun} shapes an export the gate makes" in err, err
    assert "checks FILE as it was made" in err and "unrecognized arguments" not in err
