"""check_parity: clean exports pass, planted faults fail, wrong metadata is named."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_onnx_parity import check_parity, export_onnx, load_model, read_data_config
from pytest_onnx_parity.onnxfile.metadata import DATA_CONFIG_KEY
from pytest_onnx_parity.errors import WeightsError

FAST = dict(layers="never", real_images=False)

# (model, input size override, layers across the depth)
PLANTS = {
    "resnet18": ["conv1.weight", "layer1.0.conv1.weight", "layer2.1.conv2.weight", "layer3.0.conv2.weight",
                 "layer4.1.conv2.weight", "fc.weight"],
    "vit_tiny_patch16_224": ["patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.5.mlp.fc1.weight",
                             "blocks.11.attn.proj.weight", "norm.weight", "head.weight"],
    "convnext_atto": ["stem.0.weight", "stages.0.blocks.0.conv_dw.weight", "stages.1.blocks.1.mlp.fc1.weight",
                      "stages.2.blocks.3.conv_dw.weight", "stages.3.blocks.1.mlp.fc2.weight", "head.fc.weight"],
}


@pytest.fixture(scope="module")
def exported(export_cache: str) -> dict[str, Any]:
    out = {}
    for name in PLANTS:
        model = load_model(name)
        out[name] = (model, export_onnx(model, exporter="torchscript", cache_dir=export_cache))
    return out


@pytest.mark.parametrize("name", list(PLANTS))
def test_clean_export_passes(exported: dict[str, Any], name: str) -> None:
    model, exp = exported[name]
    result = check_parity(model, onnx=exp.path, **FAST)
    assert result.passed, result.failure_message()
    assert {c.name: c.status for c in result.checks} == {
        "weights": "passed", "data_config": "passed", "logits": "passed", "topk": "passed", "batch_consistency": "passed",
        "real_images": "skipped", "headroom": "passed", "layers": "skipped"}


@pytest.mark.parametrize("name,param", [(n, p) for n, ps in PLANTS.items() for p in ps])
def test_one_layer_scaled_by_1_5_fails_on_logits(exported: dict[str, Any], name: str, param: str) -> None:
    import torch

    model, exp = exported[name]
    weight = dict(model.named_parameters())[param]
    with torch.no_grad():
        weight.mul_(1.5)
    try:
        result = check_parity(model, onnx=exp.path, **FAST)
    finally:
        with torch.no_grad():
            weight.div_(1.5)
    logits = result.check("logits")
    assert logits is not None and logits.status == "failed", f"a 1.5x error in {param} was not caught"
    assert not result.passed
    assert "Mismatched elements" in logits.message


def test_timm_init_hides_the_fault_that_ours_exposes() -> None:
    """The seed fact: with timm's own init a 1.5x error in layer3.0.conv2 changes nothing."""
    import timm
    import torch

    torch.manual_seed(0)
    plain = timm.create_model("resnet18").eval()
    ours = load_model("resnet18")
    x = torch.randn(2, 3, 224, 224)
    for model, visible in ((plain, False), (ours, True)):
        w = model.layer3[0].conv2.weight
        with torch.no_grad():
            before = model(x)
            w.mul_(1.5)
            after = model(x)
            w.div_(1.5)
        assert (float((after - before).abs().max()) > 1e-2) is visible


@pytest.mark.parametrize("name", ["mixer_s16_224", "efficientnet_b0"])
def test_random_weights_give_logits_of_order_one(name: str) -> None:
    import torch

    model = load_model(name)
    with torch.no_grad():
        y = model(torch.randn(2, 3, 224, 224))
    assert 0.3 < float(y.std()) < 3.0


def test_random_weights_are_the_same_in_every_process() -> None:
    code = ("from pytest_onnx_parity.model.build import load_model, state_dict_hash;"
            "print(state_dict_hash(load_model('convnext_atto', seed=3)))")
    hashes = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
              for _ in range(1)}
    from pytest_onnx_parity.model.build import state_dict_hash

    assert hashes == {state_dict_hash(load_model("convnext_atto", seed=3))}
    assert state_dict_hash(load_model("convnext_atto", seed=4)) not in hashes


def _rewrite_metadata(src: Path, dst: Path, **changes: Any) -> None:
    import onnx

    proto = onnx.load(str(src))
    for p in proto.metadata_props:
        if p.key == DATA_CONFIG_KEY:
            cfg = json.loads(p.value)
            cfg.update(changes)
            p.value = json.dumps(cfg)
    onnx.save(proto, str(dst))


def test_imagenet_default_metadata_fails_naming_the_fields(tmp_path: Path, export_cache: str) -> None:
    """The seed failure: ViT-S's file edited to ImageNet defaults must fail, naming mean, std and crop_pct."""
    name = "vit_small_patch16_224.augreg_in21k_ft_in1k"
    model = load_model(name)
    exp = export_onnx(model, exporter="torchscript", cache_dir=export_cache)
    assert exp.data_config["mean"] == [0.5, 0.5, 0.5] and exp.data_config["crop_pct"] == 0.9
    bad = tmp_path / "vit_s_imagenet_defaults.onnx"
    _rewrite_metadata(exp.path, bad, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], crop_pct=0.875)
    result = check_parity(model, onnx=bad, layers="never")
    check = result.check("data_config")
    assert check is not None and check.status == "failed" and not result.passed
    assert "mean: model wants (0.5, 0.5, 0.5), file has (0.485, 0.456, 0.406)" in check.message
    assert "std: model wants (0.5, 0.5, 0.5), file has (0.229, 0.224, 0.225)" in check.message
    assert "crop_pct: model wants 0.9, file has 0.875" in check.message
    assert "interpolation" not in check.message
    # end to end, the deployment that follows the file's metadata gets other pixels, and other logits
    assert result.check("real_images").status == "failed"
    assert result.check("logits").status == "passed"  # the graph itself is fine


def test_file_without_metadata_fails_data_config(tmp_path: Path, export_cache: str) -> None:
    import onnx

    model = load_model("resnet18")
    exp = export_onnx(model, exporter="torchscript", cache_dir=export_cache)
    proto = onnx.load(str(exp.path))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    result = check_parity(model, onnx=bare, **FAST)
    assert result.check("data_config").status == "failed"
    assert "carries no data config" in result.check("data_config").message
    with pytest.raises(Exception, match="carries no data config"):
        read_data_config(bare)


def test_batch_mixing_model_fails_batch_consistency(tmp_path: Path) -> None:
    """A graph whose outputs depend on the other samples of the batch fails batch consistency."""
    import torch

    from pytest_onnx_parity.onnxfile.metadata import write_metadata
    from pytest_onnx_parity.preprocessing.dataconfig import resolve_data_config

    class Baked(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner
            self.pretrained_cfg = inner.pretrained_cfg

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.inner(x)
            return y - y.mean(0, keepdim=True) * 0.5  # mixes samples: output depends on the batch

    model = Baked(load_model("test_vit"))
    path = tmp_path / "baked.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(2, 3, 160, 160),), str(path), dynamo=False,
                          input_names=["input"], dynamic_axes={"input": {0: "batch"}})
    write_metadata(path, resolve_data_config(model.inner))
    result = check_parity(model, onnx=path, **FAST)
    assert result.check("batch_consistency").status == "failed"
    assert "depend on the batch" in result.check("batch_consistency").message


def test_unknown_model_is_an_error_with_close_matches() -> None:
    result = check_parity("resnet181=random", **FAST)
    assert result.status == "error" and "Did you mean: resnet18" in (result.error or "")


def test_missing_checkpoint_names_the_fix(tmp_path: Path) -> None:
    result = check_parity(f"resnet18={tmp_path / 'nope.safetensors'}", **FAST)
    assert result.status == "error"
    assert "checkpoint file not found" in result.error and "resnet18=random" in result.error


def test_local_checkpoint_is_loaded_through_timm(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    src = load_model("test_vit", seed=5)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    loaded = load_model(f"test_vit={path}")
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        assert torch.equal(src(x), loaded(x))
    corrupt = tmp_path / "bad.safetensors"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="is not a safetensors file"):  # told before timm is asked
        load_model(f"test_vit={corrupt}")
    other = tmp_path / "other.safetensors"
    save_file({"fc.weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(WeightsError, match="(?s)does not fit test_vit .*missing from the checkpoint"):
        load_model(f"test_vit={other}")


def test_pretrained_offline_names_the_fix() -> None:
    result = check_parity("resnet18=pretrained", **FAST)
    assert result.status == "error"
    assert "resnet18=random" in result.error and "local file" in result.error


def test_dynamo_export_passes_and_carries_metadata(export_cache: str) -> None:
    from pytest_onnx_parity.onnxfile.metadata import read_provenance

    result = check_parity("test_convnext", exporter="dynamo", cache_dir=export_cache, layers="never")
    assert result.passed, result.failure_message()
    prov = read_provenance(result.onnx_path)
    assert prov["exporter"] == "dynamo" and prov["opset"] >= 18 and prov["model"] == "test_convnext"
    assert set(prov["versions"]) >= {"torch", "timm", "onnx", "onnxscript", "pytest-onnx-parity"}
    assert prov["weights"].startswith("random:seed=0")
    assert np.isclose(result.data_config["crop_pct"], read_data_config(result.onnx_path)["crop_pct"])
