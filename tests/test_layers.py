"""Per-layer parity: faults planted in one layer of an exported file are named at that layer.

Each model is exported once per exporter (module-scoped fixtures). A fault is a 5%
scale of one weight initializer of the exported file (``scale_layer_weights``).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from pytest_onnx_parity.errors import OnnxFileError, OnnxParityError, ParityFailure, SpecError  # noqa: E402
from pytest_onnx_parity.layers import LayerComparison, assert_layers_close, compare_layers  # noqa: E402
from pytest_onnx_parity.layers.api import parse_memory  # noqa: E402
from pytest_onnx_parity.testing import scale_layer_weights  # noqa: E402
from pytest_onnx_parity.tolerances import LAYER_ATOL as DEFAULT_ATOL, LAYER_RTOL as DEFAULT_RTOL  # noqa: E402

EXPORTERS = ("dynamo", "torchscript")
ARCHS = ("test_resnet", "test_vit", "test_convnext")  # timm's tiny test models: a ResNet, a ViT, a ConvNeXt

# (arch, module whose weights are scaled, the row expected as first divergence)
FAULTS = [
    # the dynamo exporter fuses layer1.0.conv1 into layer1.0.bn1 (TorchScript folds it the other way):
    # either way the row is the norm's, with the conv in .fused
    ("test_resnet", "conv1.0", "conv1.1"),
    ("test_resnet", "layer1.0.conv1", "layer1.0.bn1"),
    ("test_resnet", "layer3.0.downsample.1", "layer3.0.downsample.2"),
    ("test_resnet", "fc", "fc"),
    ("test_vit", "patch_embed.proj", "patch_embed.proj"),
    ("test_vit", "blocks.2.attn.qkv", "blocks.2.attn.qkv"),
    ("test_vit", "blocks.5.mlp.fc2", "blocks.5.mlp.fc2"),
    ("test_convnext", "stem.0", "stem.0"),
    ("test_convnext", "stages.2.blocks.1.conv_dw", "stages.2.blocks.1.conv_dw"),
    ("test_convnext", "stages.3.blocks.0.mlp.fc1", "stages.3.blocks.0.mlp.fc1"),
]


# --------------------------------------------------------------------------- fixtures


def _load(arch: str) -> Any:
    from pytest_onnx_parity.model.build import load_model

    return load_model(arch, "random")


def _export(model: Any, path: Path, exporter: str) -> Path:
    from pytest_onnx_parity.onnxfile.export import export_onnx

    return export_onnx(model, path, exporter=exporter, use_cache=False).path


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    return {}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Any]) -> Any:
    """``exported(arch, exporter) -> (model, path, x)``, each export made once per module."""
    files: dict[tuple[str, str], Path] = {}
    folder = tmp_path_factory.mktemp("layers")

    def get(arch: str, exporter: str) -> tuple[Any, Path, Any]:
        if arch not in models:
            models[arch] = _load(arch)
        model = models[arch]
        if (arch, exporter) not in files:
            files[arch, exporter] = _export(model, folder / f"{arch}-{exporter}.onnx", exporter)
        size = model.pretrained_cfg["input_size"]
        x = torch.randn((1, *size), generator=torch.Generator().manual_seed(1))
        return model, files[arch, exporter], x

    return get


# --------------------------------------------------------------------------- clean exports


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("arch", ARCHS)
def test_clean_export_shows_no_divergence(exported: Any, arch: str, exporter: str) -> None:
    model, path, x = exported(arch, exporter)
    cmp = compare_layers(model, path, x)
    assert cmp.first_divergence is None, cmp.table()
    assert cmp.passed
    assert cmp.exporter == exporter
    assert cmp.onnx_runs == 1 and cmp.forced_runs == 1 and cmp.torch_forwards == 1
    assert all(layer.own_diff is not None for layer in cmp.layers) and not cmp.own_note
    assert len(cmp.layers) >= 20
    worst = max(layer.ratio for layer in cmp.layers)
    assert worst < 0.1, f"clean export uses {worst:.2f} of the tolerance somewhere:\n{cmp.table()}"
    assert all(u.reason for u in cmp.uncompared)
    assert cmp.message() == f"no divergence across {len(cmp.layers)} compared layers"
    names = [layer.name for layer in cmp.layers]
    assert len(set(names)) == len(names)


def test_layers_come_in_execution_order(exported: Any) -> None:
    model, path, x = exported("test_vit", "dynamo")
    names = [layer.name for layer in compare_layers(model, path, x).layers]
    assert names.index("patch_embed.proj") < names.index("blocks.0.norm1") < names.index("blocks.0.attn.qkv")
    assert names.index("blocks.0.mlp.fc2") < names.index("blocks.1.norm1") < names.index("norm") < names.index("head")
    assert names.index("blocks.0.mlp.fc1") < names.index("blocks.0.mlp.act") < names.index("blocks.0.mlp.fc2")


# --------------------------------------------------------------------------- planted faults


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize(("arch", "layer", "expected"), FAULTS, ids=[f"{a}-{m}" for a, m, _ in FAULTS])
def test_planted_fault_is_named_at_its_layer(exported: Any, arch: str, layer: str, expected: str, exporter: str) -> None:
    model, path, x = exported(arch, exporter)
    faulty = scale_layer_weights(model, path, layer, 1.05)
    cmp = compare_layers(model, faulty, x)
    first = cmp.first_divergence
    assert first is not None, cmp.table()
    assert first.name == expected, cmp.table(max_rows=12)
    assert layer in (first.name, *first.fused)
    assert first.ratio > 10  # caught with room to spare, not at the edge of the tolerance
    at = cmp.layers.index(first)
    assert all(earlier.passed for earlier in cmp.layers[:at])
    # the layers after it carry its error (upstream_rel) and do not add their own: only the culprit fails
    assert cmp.failed == [first]
    later = cmp.layers[at + 1 :]
    if later:
        assert max(layer.upstream_rel for layer in later) >= first.max_rel_diff
    assert re.fullmatch(
        rf"first divergence at {re.escape(expected)} \(\w+\): own error [0-9.e+-]+, [0-9.e]+x its tolerance "
            r"\(max abs diff [0-9.e+-]+ with what it inherited(; .*)?\)",
        cmp.message(),
    ), cmp.message()


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_fused_conv_is_listed_as_uncompared(exported: Any, exporter: str) -> None:
    model, path, x = exported("test_resnet", exporter)
    cmp = compare_layers(model, path, x)
    reasons = {u.name: u.reason for u in cmp.uncompared}
    assert reasons["layer1.0.conv1"] == "fused with layer1.0.bn1 by the exporter (compared as layer1.0.bn1)"
    bn1 = next(layer for layer in cmp.layers if layer.name == "layer1.0.bn1")
    assert bn1.fused == ("layer1.0.conv1",)
    assert bn1.onnx_ops == ("Conv",)
    assert "identity in eval mode" in reasons["layer1.0.drop_block"]
    # a block's output is its last activation's: compared once, under the innermost module
    act2 = next(layer for layer in cmp.layers if layer.name == "layer1.0.act2")
    assert set(act2.aliases) == {"layer1.0", "layer1"}
    compared_or_listed = {layer.name for layer in cmp.layers} | set(reasons)
    compared_or_listed |= {a for layer in cmp.layers for a in layer.aliases}
    assert compared_or_listed == {name for name, _ in model.named_modules() if name}  # nothing silently skipped


# --------------------------------------------------------------------------- one pass, chunks


def test_two_onnx_runtime_runs_and_one_forward(exported: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    model, path, x = exported("test_convnext", "dynamo")
    runs: list[str] = []
    for method in ("run", "run_with_ort_values", "run_with_iobinding"):
        original = getattr(ort.InferenceSession, method)

        def counting(self: Any, *args: Any, _original: Any = original, _method: str = method, **kwargs: Any) -> Any:
            runs.append(_method)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(ort.InferenceSession, method, counting)
    forwards: list[int] = []
    handle = model.register_forward_pre_hook(lambda *_: forwards.append(1))
    try:
        cmp = compare_layers(model, path, x)
    finally:
        handle.remove()
    assert len(runs) == 2  # end to end, and teacher forced
    assert len(forwards) == 1
    assert cmp.onnx_runs == 1 and cmp.forced_runs == 1 and len(cmp.layers) > 50


@pytest.mark.parametrize(("arch", "exporter", "layer"), [("test_resnet", "dynamo", "layer2.0.conv2"), ("test_vit", "torchscript", "blocks.3.mlp.fc1")])
def test_chunked_mode_gives_the_same_result(exported: Any, arch: str, exporter: str, layer: str) -> None:
    model, path, x = exported(arch, exporter)
    faulty = scale_layer_weights(model, path, layer, 1.05)
    whole = compare_layers(model, faulty, x)
    budget = 3 * max(layer.shape and _numel(layer.shape) for layer in whole.layers) * 4
    chunked = compare_layers(model, faulty, x, memory_budget=budget)
    assert whole.onnx_runs == 1
    assert chunked.onnx_runs > 3 and chunked.torch_forwards == chunked.onnx_runs == chunked.forced_runs
    assert chunked.peak_tensor_bytes <= budget
    assert [r.name for r in chunked.layers] == [r.name for r in whole.layers]
    assert [r.passed for r in chunked.layers] == [r.passed for r in whole.layers]
    assert chunked.first_divergence is not None and whole.first_divergence is not None
    assert chunked.first_divergence.name == whole.first_divergence.name
    for a, b in zip(chunked.layers, whole.layers):
        assert a.onnx_value == b.onnx_value
        # ONNX Runtime may fuse differently when fewer values are asked for: equal up to float rounding
        assert a.max_abs_diff == pytest.approx(b.max_abs_diff, rel=0.05, abs=1e-5)
        assert a.own_diff == pytest.approx(b.own_diff, rel=0.05, abs=1e-5)  # each chunk forced from its feeders too
    assert {u.name: u.reason for u in chunked.uncompared} == {u.name: u.reason for u in whole.uncompared}


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# --------------------------------------------------------------------------- API surface


def test_assert_layers_close(exported: Any) -> None:
    model, path, x = exported("test_convnext", "torchscript")
    assert isinstance(assert_layers_close(model, path, x.numpy()), LayerComparison)
    faulty = scale_layer_weights(model, path, "stages.1.blocks.0.mlp.fc1", 1.05)
    with pytest.raises(ParityFailure) as info:
        assert_layers_close(model, faulty, x)
    text = str(info.value)
    assert text.startswith("first divergence at stages.1.blocks.0.mlp.fc1 (Linear): own error ")
    assert re.search(r"^\s*\d+\s+stages\.1\.blocks\.0\.mlp\.fc1\s.*FAIL$", text, re.M)
    assert text.rstrip().endswith("to change the per-layer tolerance.")
    # looser tolerances change the verdict; atol and rtol come together
    assert compare_layers(model, faulty, x, atol=1.0, rtol=1.0).passed
    with pytest.raises(SpecError, match="together"):
        compare_layers(model, faulty, x, rtol=1e-2)
    with pytest.raises(SpecError, match="growth"):
        compare_layers(model, faulty, x, growth=0.5)


def test_report_table_and_json(exported: Any) -> None:
    model, path, x = exported("test_vit", "dynamo")
    cmp = compare_layers(model, scale_layer_weights(model, path, "blocks.1.mlp.fc1"), x)
    data = json.loads(json.dumps(cmp.to_dict()))
    assert data["first_divergence"] == "blocks.1.mlp.fc1"
    assert data["passed"] is False and data["onnx_runs"] == 1
    assert data["atol"] == DEFAULT_ATOL and data["rtol"] == DEFAULT_RTOL
    row = next(r for r in data["layers"] if r["name"] == "blocks.1.mlp.fc1")
    assert row["module_type"] == "Linear" and row["onnx_ops"] == ["MatMul", "Add"] and not row["passed"]
    assert {"max_abs_diff", "max_rel_diff", "cosine", "tolerance", "onnx_value"} <= set(row)
    table = cmp.table()
    assert table.splitlines()[0].split()[:3] == ["#", "layer", "type"]
    assert re.search(r"blocks\.1\.mlp\.fc1\s+Linear\s+MatMul,Add .* FAIL$", table, re.M)
    assert "upstream" in table.splitlines()[0]
    assert "blocks.0.mlp.fc1" in table and len(cmp.table(max_rows=5).splitlines()) == 5 + 4


def test_spec_string_numpy_input_and_model_proto(exported: Any) -> None:
    model, path, x = exported("test_vit", "torchscript")
    cmp = compare_layers("test_vit", onnx.load(str(path)), x.numpy())
    assert cmp.passed and len(cmp.layers) > 20


def test_external_data_file(exported: Any, tmp_path: Path) -> None:
    model, path, x = exported("test_convnext", "dynamo")
    target = tmp_path / "ext" / "model.onnx"
    target.parent.mkdir()
    onnx.save(onnx.load(str(path)), str(target), save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    cmp = compare_layers(model, target, x)
    assert cmp.passed and len(cmp.layers) > 50
    with pytest.raises(OnnxFileError, match="pass the path"):
        compare_layers(model, onnx.load(str(target), load_external_data=False), x)


def test_file_without_scope_information(exported: Any) -> None:
    model, path, x = exported("test_vit", "torchscript")
    proto = onnx.load(str(path))
    for node in proto.graph.node:
        node.name = ""
    cmp = compare_layers(model, proto, x)
    assert cmp.layers == [] and cmp.exporter == "unknown"
    assert cmp.message().startswith("no layer could be compared: the file carries no scope information")
    reasons = {u.reason for u in cmp.uncompared}
    assert reasons == {"the ONNX file carries no scope information", "not called in the forward"}
    with pytest.raises(OnnxParityError, match="no layer could be compared"):
        assert_layers_close(model, proto, x)


def test_parse_memory() -> None:
    assert parse_memory("1GiB") == 1 << 30
    assert parse_memory("512MB") == 512_000_000
    assert parse_memory("64M") == 64 << 20
    assert parse_memory(4096) == 4096
    assert parse_memory("2e9") == 2_000_000_000
    for bad in ("lots", "-1G", "0", "1 parsec", True):
        with pytest.raises(SpecError, match="memory budget"):
            parse_memory(bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- plots


def test_plot_layers(exported: Any, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from pytest_onnx_parity.report.plots import plot_layers

    model, path, x = exported("test_vit", "dynamo")
    cmp = compare_layers(model, scale_layer_weights(model, path, "blocks.3.attn.proj"), x)
    out = plot_layers(cmp, tmp_path / "plots" / "test_vit.png", title="test_vit")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_matrix_variant_gets_its_own_plot_file_and_title(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """One naming rule (plots.plot_file) for the gate's items and ``onnx-parity check``: label = the item's name."""
    from types import SimpleNamespace

    from pytest_onnx_parity.report import plots
    from pytest_onnx_parity.__main__ import _extras

    drawn: list[tuple[Path, str]] = []
    monkeypatch.setattr(plots, "plot_layers", lambda cmp, path, title=None: drawn.append((Path(path), title)) or Path(path))
    variant = {"exporter": "dynamo", "opset": None, "precision": "fp16", "ort_opt": "all"}
    for precision in ("fp16", "fp32"):
        result = SimpleNamespace(layer_comparison=object(), variant={**variant, "precision": precision}, passed=True)
        plots.layer_plot(result, tmp_path, f"test_vit-{precision}")
    (fp16, t16), (fp32, t32) = drawn
    assert (fp16.name, fp32.name) == ("test_vit-fp16.png", "test_vit-fp32.png")
    assert t16 == "test_vit-fp16\nexporter dynamo, opset default, precision fp16, ort_opt all" and "precision fp32" in t32
    long = "x" * 130
    assert plots.plot_file(tmp_path, long + "-fp16") != plots.plot_file(tmp_path, long + "-fp32")
    assert len(plots.plot_file(tmp_path, long + "-fp16").name) <= 120
    drawn.clear()  # the command line: one item, labelled by its spec
    run = SimpleNamespace(result=SimpleNamespace(layer_comparison=object(), variant=variant, passed=True),
                          model_arg="test_vit=/c/k.safetensors@/d/m.onnx")
    _extras(run, SimpleNamespace(plots=str(tmp_path), artifacts=None))
    title = "test_vit=/c/k.safetensors@/d/m.onnx\nexporter dynamo, opset default, precision fp16, ort_opt all"
    assert drawn == [(plots.plot_file(tmp_path, run.model_arg), title)]


def test_plot_layers_without_matplotlib(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    from pytest_onnx_parity.report.plots import plot_layers

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    cmp = LayerComparison(layers=[], uncompared=[], atol=DEFAULT_ATOL, rtol=DEFAULT_RTOL, exporter="dynamo")
    with pytest.raises(OnnxParityError, match=re.escape('pip install "pytest-onnx-parity[plots]"')):
        plot_layers(cmp, tmp_path / "x.png")
