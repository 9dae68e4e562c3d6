"""The command line's own rules: what ``onnx-parity check`` offers and refuses, what ``stamp`` refuses."""
from __future__ import annotations

from pathlib import Path

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


def _fixed_file(path: Path, shape: list[int]) -> Path:
    """A file whose one float input is fixed at ``shape`` (an export at 128 px, as timm's onnx_export leaves it)."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("ReduceMean", ["x"], ["y"], keepdims=0)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("shape", [[1, 3, 128, 128], [1, 128, 128, 3]])
def test_stamp_refuses_a_config_that_contradicts_the_files_fixed_input(shape: list[int], tmp_path: Path) -> None:
    from pytest_onnx_parity import read_data_config, stamp_onnx
    from pytest_onnx_parity.errors import OnnxParityError

    path = _fixed_file(tmp_path / "m.onnx", shape)
    with pytest.raises(OnnxParityError) as info:
        stamp_onnx(path, "resnet18")  # timm's config of the name: 224 px
    text = str(info.value)
    assert "input is fixed at 128x128" in text and "says 224x224 (from timm's pretrained config of the name)" in text, text
    assert "--data-config input_size=(3,128,128)" in text and "--force" in text
    with pytest.raises(Exception):  # nothing was written
        read_data_config(path)
    stamp_onnx(path, "resnet18", data_config={"input_size": (3, 128, 128)})  # the fix it names
    assert read_data_config(path)["input_size"] == [3, 128, 128]
    stamp_onnx(path, "resnet18", force=True)  # forced: written as asked
    assert read_data_config(path)["input_size"] == [3, 224, 224]


def test_stamp_command_refuses_and_forces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _fixed_file(tmp_path / "m.onnx", [1, 3, 128, 128])
    assert main(["stamp", str(path), "--model", "resnet18"]) == 2
    assert "onnx-parity stamp: error:" in capsys.readouterr().err
    assert main(["stamp", str(path), "--model", "resnet18", "--force"]) == 0
    dynamic = _fixed_file(tmp_path / "d.onnx", ["N", 3, "H", "W"])
    assert main(["stamp", str(dynamic), "--model", "resnet18"]) == 0  # a dynamic size contradicts nothing
