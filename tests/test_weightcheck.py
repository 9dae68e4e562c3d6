"""The weights check: passes on exports of the same weights, fails on other weights, names a changed layer."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

import pytest_onnx_parity as P
from pytest_onnx_parity.errors import OnnxParityError
from pytest_onnx_parity.checks.weightmatch import MIN_EVIDENCE, WeightsCheckError, compare_weights

ARCHS = ["test_resnet", "test_efficientnet", "test_vit", "test_convnext"]
_MODELS: dict[tuple[str, int], Any] = {}


def built(name: str, seed: int = 0) -> Any:
    """The model with its record (its spec names it in messages and in the file's provenance)."""
    if (name, seed) not in _MODELS:
        _MODELS[(name, seed)] = P.load_model_record(name, seed=seed)
    return _MODELS[(name, seed)]


def model(name: str, seed: int = 0) -> Any:
    return built(name, seed).module


def exported(name: str, exporter: str, cache: str) -> Path:
    return P.export_onnx(built(name), exporter=exporter, cache_dir=cache).path


OWN_EXPORTS = [(a, e) for a in ARCHS for e in ("dynamo", "torchscript") if (a, e) != ("test_efficientnet", "dynamo")]


@pytest.mark.parametrize(("name", "exporter"), OWN_EXPORTS)  # efficientnet's dynamo export adds 4 s and no new form
def test_passes_on_the_plugins_own_exports(name: str, exporter: str, export_cache: str) -> None:
    r = compare_weights(model(name), exported(name, exporter, export_cache))
    assert r.status == "passed", r.message
    assert r.passed and not r.differing
    assert r.coverage >= 0.95 and r.compared >= 0.95 * r.total  # BN folding, transposes, layer scales all found
    assert r.fraction_differing == 0.0
    assert "the file holds the model's weights" in r.message


def _foreign_exports(tmp_path: Path) -> dict[str, tuple[Any, Path]]:
    import torch
    from timm.utils.onnx import onnx_export

    out = {}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = model("test_resnet")
        onnx_export(m, str(tmp_path / "timm.onnx"), input_size=(3, 64, 64), batch_size=1, check=False)
        out["timm"] = (m, tmp_path / "timm.onnx")
        v = model("test_vit")
        torch.onnx.export(v, torch.randn(1, *v.pretrained_cfg["input_size"]), str(tmp_path / "plain.onnx"), dynamo=False)
        out["plain"] = (v, tmp_path / "plain.onnx")
    m.eval()
    v.eval()
    return out


def test_passes_on_timm_and_plain_torch_exports(tmp_path: Path) -> None:
    for way, (m, path) in _foreign_exports(tmp_path).items():
        r = compare_weights(m, path)
        assert r.status == "passed", f"{way}: {r.message}"
        assert r.coverage >= 0.95, way


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_a_file_with_another_seed_fails_naming_the_fix(exporter: str, export_cache: str) -> None:
    r = compare_weights(model("test_resnet", seed=1), exported("test_resnet", exporter, export_cache))
    assert r.status == "failed"
    assert r.matched == 0 and r.compared == r.total and r.fraction_differing == 1.0
    assert r.message.startswith("The ONNX file holds other weights than the model under test!")
    assert "NAME=pretrained" in r.message and "NAME=/path/to/checkpoint" in r.message
    assert r.differing[0][0] == "conv1.0.weight"  # the first weight of the model, with its difference
    assert "First differing weight: conv1.0.weight (file tensor " in r.message


@pytest.mark.parametrize(("name", "other", "exporter"), [("test_vit", "test_resnet", "torchscript"),
                                                          ("test_resnet", "test_convnext", "dynamo")])
def test_a_file_of_another_model_fails_saying_so(name: str, other: str, exporter: str, export_cache: str) -> None:
    """0 of N weights in a file that computes with float weights of its own: not "skipped", but "not this model"."""
    r = compare_weights(built(name), exported(other, exporter, export_cache))  # named by its spec
    assert r.status == "failed" and r.other_model and r.informative_matched == 0
    assert r.message.startswith(f"this file does not hold {name}'s weights: 0 of its {r.total} weights matched")
    assert r.file_kernels > 0 and f"computes with {r.file_kernels} float weight tensors of its own" in r.message
    assert f"Its metadata names the model '{other}'" in r.message  # the plugin's own export says what it is
    assert "the model it was exported from" in r.message and f"{name}=/path/to/checkpoint" in r.message
    assert r.to_dict()["other_model"] is True


def test_quantized_kernels_are_no_evidence_of_another_model(tmp_path: Path) -> None:
    """An int8 file's kernels come out of DequantizeLinear: its float tensors (scales) say nothing about the model."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.ones((16, 3, 3, 3), np.int8), "w_q"),
             numpy_helper.from_array(np.full(16, 0.02, np.float32) + np.arange(16, dtype=np.float32) * 1e-3, "w_scale"),
             numpy_helper.from_array(np.zeros(16, np.int8), "w_zero")]
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=0),
             helper.make_node("Conv", ["x", "w"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 6, 6])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "q.onnx"))
    r = compare_weights(model("test_resnet"), tmp_path / "q.onnx")
    assert r.status == "skipped" and not r.other_model and r.file_kernels == 0


def test_random_weights_against_a_checkpoint_export_fail(tmp_path: Path) -> None:
    import torch

    ckpt = tmp_path / "trained.pth"
    torch.save(model("test_efficientnet", seed=3).state_dict(), ckpt)
    trained = P.load_model(f"test_efficientnet={ckpt}")
    path = tmp_path / "trained.onnx"
    P.export_onnx(trained, path, exporter="torchscript", use_cache=False)
    assert compare_weights(trained, path).passed
    r = compare_weights(model("test_efficientnet"), path)  # random weights under test, the file holds the checkpoint
    assert r.status == "failed" and "other weights" in r.message


@pytest.mark.parametrize(("name", "exporter", "layer"), [
    ("test_resnet", "torchscript", "layer1.0.conv1"),  # conv folded with its BatchNorm, renamed onnx::Conv_*
    ("test_resnet", "dynamo", "layer2.0.conv2"),  # folded too, the kernel keeps its name
    ("test_vit", "torchscript", "blocks.0.attn.qkv"),  # MatMul with the transposed weight
    ("test_convnext", "dynamo", "stages.1.blocks.0.conv_dw"),
])
def test_one_layer_changed_by_five_percent_fails_naming_it(name: str, exporter: str, layer: str,
                                                           export_cache: str, tmp_path: Path) -> None:
    import onnx

    from pytest_onnx_parity.testing import scale_layer_weights

    m = model(name)
    faulty = tmp_path / "faulty.onnx"
    onnx.save(scale_layer_weights(m, exported(name, exporter, export_cache), layer, 1.05), str(faulty))
    r = compare_weights(m, faulty)
    assert r.status == "failed"
    assert [d[0] for d in r.differing] == [f"{layer}.weight"]
    _, abs_diff, rel = r.differing[0]
    assert abs_diff > 0 and rel == pytest.approx(0.05, rel=0.02)
    assert r.message.startswith("The ONNX file's weights differ from the model's in some layers!")
    assert f"First differing weight: {layer}.weight" in r.message
    assert "Mismatched weights: 1 / " in r.message and "re-export" in r.message


def test_float16_file_passes_at_float16_tolerance_and_still_sees_a_changed_layer(export_cache: str, tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    m = model("test_resnet")
    proto = onnx.load(str(exported("test_resnet", "torchscript", export_cache)))
    for t in proto.graph.initializer:
        if t.data_type == onnx.TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    onnx.save(proto, str(tmp_path / "fp16.onnx"))
    r = compare_weights(m, tmp_path / "fp16.onnx")
    assert r.status == "passed", r.message
    assert "tolerance float16" in r.message and r.rtol > 1e-3
    strict = compare_weights(m, tmp_path / "fp16.onnx", rtol=1e-6, atol=1e-9)  # float32 rules would call it different
    assert strict.status == "failed"
    target = next(t for t in proto.graph.initializer if list(t.dims) == [48, 48, 3, 3])
    target.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(target) * np.float16(1.05), target.name))
    onnx.save(proto, str(tmp_path / "fp16-fault.onnx"))
    assert compare_weights(m, tmp_path / "fp16-fault.onnx").status == "failed"


def _tiny_file(path: Path, tensors: dict[str, Any]) -> Path:
    import onnx
    from onnx import helper, numpy_helper

    inits = [numpy_helper.from_array(a, n) for n, a in tensors.items()]
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])], inits)
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_no_float_weights_is_skipped_not_passed(tmp_path: Path) -> None:
    import numpy as np

    path = _tiny_file(tmp_path / "int8.onnx", {"w": np.ones((16, 3, 3, 3), np.int8)})
    r = compare_weights(model("test_resnet"), path)
    assert r.status == "skipped" and not r.passed
    assert "no floating-point weights" in r.message


def test_nothing_comparable_is_skipped(tmp_path: Path) -> None:
    import numpy as np

    path = _tiny_file(tmp_path / "other.onnx", {"w": np.full((7, 11), 0.5, np.float32)})
    r = compare_weights(model("test_resnet"), path)
    assert r.status == "skipped" and r.compared == 0
    assert "no weight of the model could be found" in r.message


def test_too_little_evidence_is_skipped(tmp_path: Path) -> None:
    m = model("test_resnet")
    path = _tiny_file(tmp_path / "head.onnx", {"fc.bias": m.fc.bias.detach().numpy()})  # one matching tensor
    r = compare_weights(m, path)
    assert r.matched == 1 and r.coverage < MIN_EVIDENCE
    assert r.status == "skipped" and "too little evidence" in r.message


def test_to_dict_is_json(export_cache: str) -> None:
    r = compare_weights(model("test_resnet", seed=1), exported("test_resnet", "torchscript", export_cache))
    d = r.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["status"] == "failed" and d["differing"][0]["name"] == "conv1.0.weight"
    assert d["differing"][0]["file_tensor"].startswith("onnx::Conv_")
    empty = compare_weights(model("test_resnet"), _tiny_file(Path(export_cache) / "x.onnx", {}))
    assert empty.to_dict()["fraction_differing"] is None  # nan -> None
    json.dumps(empty.to_dict(), allow_nan=False)


def test_bad_arguments_raise_clear_errors(export_cache: str, tmp_path: Path) -> None:
    path = exported("test_resnet", "torchscript", export_cache)
    with pytest.raises(WeightsCheckError, match="together"):
        compare_weights(model("test_resnet"), path, rtol=1e-3)
    with pytest.raises(WeightsCheckError, match="torch.nn.Module"):
        compare_weights(42, path)  # type: ignore[arg-type]
    with pytest.raises(OnnxParityError, match="not found"):
        compare_weights(model("test_resnet"), tmp_path / "missing.onnx")


def _computed_weights_model() -> Any:
    """Three forms module order and raw weights cannot explain, as timm writes them:
    a ScaledStdConv2d (nfnet: kernel standardised and scaled by a gain at run time),
    convolutions and norms kept in two lists (Res2Net's ``convs``/``bns``: in module order
    ``bns.0`` follows ``convs.1``), and a qkv bias concatenated from q and v biases."""
    import torch
    from timm.layers import ScaledStdConv2d

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = ScaledStdConv2d(3, 8, 3, padding=1)
            self.convs = torch.nn.ModuleList([torch.nn.Conv2d(4, 4, 3, padding=1, bias=False) for _ in range(2)])
            self.bns = torch.nn.ModuleList([torch.nn.BatchNorm2d(4) for _ in range(2)])
            self.qkv = torch.nn.Linear(8, 24, bias=False)
            self.q_bias = torch.nn.Parameter(torch.randn(8))
            self.v_bias = torch.nn.Parameter(torch.randn(8))
            self.head = torch.nn.Linear(8, 10)
            self.pretrained_cfg = {"input_size": (3, 16, 16)}

        def forward(self, x: Any) -> Any:
            a, b = self.stem(x).split(4, dim=1)
            a = self.bns[0](self.convs[0](a))
            b = self.bns[1](self.convs[1](b + a))
            t = torch.cat([a, b], 1).flatten(2).transpose(1, 2)
            bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
            q = torch.nn.functional.linear(t, self.qkv.weight, bias)[..., :8]
            return self.head(q.mean(1))

    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        net.stem.gain.uniform_(0.5, 2.0)
        for bn in net.bns:
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.normal_()
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_computed_weights_and_norms_kept_in_lists_pass_and_a_fault_in_them_fails(exporter: str, tmp_path: Path) -> None:
    import copy

    import torch

    net = _computed_weights_model()
    path = P.export_onnx(net, tmp_path / "net.onnx", exporter=exporter, use_cache=False).path
    r = compare_weights(net, path)
    assert r.status == "passed", r.message
    assert r.pairing == "traced" and r.coverage == 1.0 and r.compared == r.total
    for weight in ("convs.1.weight", "stem.gain"):  # folded with bns.1; folded into the standardised kernel
        changed = copy.deepcopy(net)
        with torch.no_grad():
            changed.get_parameter(weight).mul_(1.05)
        bad = compare_weights(changed, path)
        assert bad.status == "failed", bad.message
        module = weight.rsplit(".", 1)[0]  # a changed gain shows in the one kernel it was folded into
        assert {d[0].rsplit(".", 1)[0] for d in bad.differing} == {module}, bad.message
    # module order (the fallback when no forward can run) pairs bns.0 with convs.1: it would cry wolf
    from pytest_onnx_parity.checks.weightforms import _order_pairs

    assert _order_pairs(net) == {"bns.0": "convs.1"}


def test_a_model_that_cannot_run_falls_back_to_module_order_and_says_so(export_cache: str) -> None:
    m = P.load_model("test_resnet")
    path = exported("test_resnet", "torchscript", export_cache)
    m.train()
    try:
        r = compare_weights(m, path)
    finally:
        m.eval()
    assert r.pairing == "module order (the model is in training mode)"
    assert r.to_dict()["pairing"] == r.pairing
    assert r.status == "passed", r.message  # plain conv -> bn blocks pair right in module order
