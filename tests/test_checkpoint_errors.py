"""A checkpoint that is a folder or misspelled: the error lists the checkpoints there and the closest one,
and never advises random weights for a given file (they can never match a shipped file)."""
from __future__ import annotations

from pathlib import Path

import pytest

from pytest_onnx_parity.errors import WeightsError
from pytest_onnx_parity.specs import check_checkpoint, parse_spec


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    """A timm train.py output folder: its checkpoints and the files beside them."""
    out = tmp_path / "20261206-resnet18-128"
    out.mkdir()
    for name in ("model_best.pth.tar", "last.pth.tar", "checkpoint-9.pth.tar", "args.yaml", "summary.csv"):
        (out / name).write_bytes(b"x")
    return out


def _error(spec: str) -> str:
    with pytest.raises(WeightsError) as info:
        check_checkpoint(parse_spec(spec))
    return str(info.value)


def test_a_folder_lists_its_checkpoints_and_names_the_best(run_dir: Path) -> None:
    text = _error(f"resnet18={run_dir}@dist/model.onnx")
    assert f"checkpoint file is a folder, not a file: {run_dir}" in text
    assert "It holds 3 checkpoints: checkpoint-9.pth.tar, last.pth.tar, model_best.pth.tar" in text, text
    assert f"write resnet18={run_dir / 'model_best.pth.tar'}" in text
    assert "args.yaml" not in text and "=random" not in text


def test_a_misspelled_checkpoint_gets_the_closest_name(run_dir: Path) -> None:
    text = _error(f"resnet18={run_dir / 'model_bset.pth.tar'}@dist/model.onnx")
    assert f"checkpoint file not found: {run_dir / 'model_bset.pth.tar'}" in text
    assert f"Did you mean {run_dir / 'model_best.pth.tar'}?" in text, text
    assert "=random" not in text
    empty = run_dir.parent / "empty"
    empty.mkdir()
    text = _error(f"resnet18={empty}@dist/model.onnx")
    assert "It holds no checkpoint (no file ending in .safetensors, .pth, .pt, .bin, .ckpt, .pth.tar)" in text, text


def test_random_weights_are_offered_only_where_the_plugin_exports(run_dir: Path) -> None:
    assert "or use resnet18=random" in _error(f"resnet18={run_dir / 'nope.safetensors'}")
    assert "=random" not in _error(f"resnet18={run_dir / 'nope.safetensors'}@m.onnx")
