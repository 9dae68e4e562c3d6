"""A 5% error in one layer's weights fails check_parity with default settings, at that layer."""
from __future__ import annotations

from typing import Any

import pytest

from pytest_onnx_parity import check_parity, export_onnx, load_model

# (model, [(parameter, module that must be named)]) at several depths; with norm-act modules
# (timm's BatchNormAct2d) the name may end in .act, the fused conv+norm+act output
PLANTS = {
    "resnet18": [("layer1.0.conv1.weight", "layer1.0.bn1"), ("layer3.0.conv2.weight", "layer3.0.bn2"),
                 ("layer4.1.conv2.weight", "layer4.1.bn2")],
    "efficientnet_b0": [("blocks.1.0.conv_pw.weight", "blocks.1.0.bn1"), ("blocks.4.1.conv_pwl.weight", "blocks.4.1.bn3"),
                        ("conv_head.weight", "bn2")],
    "vit_tiny_patch16_224": [("blocks.1.attn.qkv.weight", "blocks.1.attn.qkv"), ("blocks.6.mlp.fc1.weight", "blocks.6.mlp.fc1"),
                             ("blocks.11.mlp.fc2.weight", "blocks.11.mlp.fc2")],
    "convnext_atto": [("stages.0.blocks.0.mlp.fc1.weight", "stages.0.blocks.0.mlp.fc1"),
                      ("stages.2.blocks.2.conv_dw.weight", "stages.2.blocks.2.conv_dw"),
                      ("stages.3.blocks.1.mlp.fc2.weight", "stages.3.blocks.1.mlp.fc2")],
}


@pytest.fixture(scope="module")
def exported(export_cache: str) -> dict[str, Any]:
    out = {}
    for name in PLANTS:
        model = load_model(name)
        out[name] = (model, export_onnx(model, exporter="torchscript", cache_dir=export_cache).path)
    return out


@pytest.mark.parametrize("name,param,module", [(n, p, m) for n, ps in PLANTS.items() for p, m in ps])
def test_five_percent_in_one_layer_fails_the_default_check(exported: dict[str, Any], name: str, param: str,
                                                           module: str) -> None:
    import torch

    model, path = exported[name]
    weight = dict(model.named_parameters())[param]
    with torch.no_grad():
        weight.mul_(1.05)
    try:
        result = check_parity(model, onnx=path, real_images=False)  # every other option at its default
    finally:
        with torch.no_grad():
            weight.div_(1.05)
    assert not result.passed, f"a 5% error in {param} passed the default check"
    assert result.check("layers").status == "failed"
    # a conv fused with its norm (and activation) is named by the fused region's output: bn1 or bn1.act
    assert result.first_divergence == module or result.first_divergence.startswith(module + ".")


def test_gate_writes_layer_plots(pytester: pytest.Pytester, export_cache: str) -> None:
    pytest.importorskip("matplotlib")
    import torch  # noqa: F401  (loaded before the in-process run)

    result = pytester.runpytest("--onnx-parity", "--onnx-parity-models=test_vit", f"--onnx-parity-cache-dir={export_cache}",
                                "--onnx-parity-exporter=torchscript", "--onnx-parity-plots=plots",
                                "--onnx-parity-ort-opt=disabled,all",  # two variants: two files, neither overwritten
                                "--onnx-parity-layer-memory=64MiB", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    pngs = sorted(p.name for p in (pytester.path / "plots").iterdir())
    assert pngs == ["test_vit-opt-all.png", "test_vit-opt-disabled.png"]
    for name in pngs:
        assert (pytester.path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
