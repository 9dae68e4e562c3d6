"""The deployment matrix (issue 11) and the embedded-preprocessing variant (issue 12), in miniature."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pytest_onnx_parity.variants import Variant, item_id, shard_pairs, variants_of, varying_axes
from pytest_onnx_parity.report.schema import entry_key, merge_reports
from pytest_onnx_parity.report.render import render_html, render_markdown


@pytest.fixture(autouse=True, scope="module")
def _preload_heavy_libraries() -> None:
    """In-process pytester runs cannot load torch or onnxruntime a second time: import them here first."""
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import onnxscript  # noqa: F401
    import timm  # noqa: F401
    import torch  # noqa: F401


def gate(pytester: pytest.Pytester, cache: str, *args: str) -> pytest.RunResult:
    return pytester.runpytest("--onnx-parity", f"--onnx-parity-cache-dir={cache}", "-p", "no:cacheprovider", *args)


def settings(**kw: object) -> SimpleNamespace:
    base = dict(exporter=("dynamo",), opset=(), precision=("fp32",), ort_opt=("all",),
                providers=("CPUExecutionProvider",), image_size=(), embed_preprocessing=False)
    return SimpleNamespace(**{**base, **kw})


# -- axes, ids, shards (no torch) ------------------------------------------------------------------------


def test_one_variant_per_combination_and_ids_name_only_varying_axes() -> None:
    vs = variants_of(settings(exporter=("dynamo", "torchscript"), precision=("fp32", "fp16"), ort_opt=("disabled", "all")))
    assert len(vs) == 8 and len(set(vs)) == 8
    assert varying_axes(vs) == ("exporter", "precision", "ort_opt")
    ids = {item_id("test_vit", v, varying_axes(vs)) for v in vs}
    assert len(ids) == 8 and "onnx-parity[test_vit-torchscript-fp16-opt-disabled]" in ids
    single = variants_of(settings())
    assert [item_id("resnet18", v, varying_axes(single)) for v in single] == ["onnx-parity[resnet18]"]
    sized = variants_of(settings(image_size=(224, 255), embed_preprocessing=True))
    assert {v.dynamic_size for v in sized} == {True} and varying_axes(sized) == ("image_size", "preprocessing")


@pytest.mark.parametrize("n_specs", [1, 5])
def test_shards_cover_every_item_once(n_specs: int) -> None:
    specs = [SimpleNamespace(text=f"m{i}") for i in range(n_specs)]
    pairs = [(s, v) for s in specs for v in variants_of(settings(precision=("fp32", "fp16"), ort_opt=("basic", "all")))]
    shards = [shard_pairs(pairs, (k, 3)) for k in (1, 2, 3)]
    seen = [(p[0].text, p[1]) for sh in shards for p in sh]
    assert sorted(seen, key=repr) == sorted(((p[0].text, p[1]) for p in pairs), key=repr)
    assert max(map(len, shards)) - min(map(len, shards)) <= 4  # balanced (by export group when there are enough)
    if n_specs >= 3:  # one export per model: a model's variants stay on one machine
        for sh in shards:
            for s in {p[0].text for p in sh}:
                assert sum(p[0].text == s for p in sh) == 4


@pytest.mark.parametrize("args,needle", [
    (["--onnx-parity-precision", "fp32,fp8"], "--onnx-parity-precision: bad value 'fp32,fp8': choose one of fp32, fp16, int8 or a comma list of them ('fp8' is not)"),
    (["--onnx-parity-ort-opt", "max"], "--onnx-parity-ort-opt: bad value 'max'"),
    (["--onnx-parity-providers", "cuda"], "--onnx-parity-providers: bad value 'cuda'"),
    (["--onnx-parity-image-size", "224,3"], "--onnx-parity-image-size: bad value '224,3'"),
    (["--onnx-parity-image-size", "big"], "--onnx-parity-image-size: bad value 'big'"),
    (["--onnx-parity-exporter", "dynamo,jit"], "--onnx-parity-exporter: bad value 'dynamo,jit'"),
    (["--onnx-parity-opset", "18,13", "--onnx-parity-exporter", "dynamo"],
     "--onnx-parity-opset: bad value 13: the dynamo exporter writes opset 18 or newer"),
])
def test_bad_axis_values_are_usage_errors(pytester: pytest.Pytester, args: list[str], needle: str) -> None:
    result = pytester.runpytest("--onnx-parity", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert needle in result.stderr.str()
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_axis_ini_keys(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nonnx_parity_precision = fp16,bf8\n")
    result = pytester.runpytest("--onnx-parity")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "ini key onnx_parity_precision: bad value 'fp16,bf8'" in result.stderr.str()


# -- reports ------------------------------------------------------------------------------------------------


def _entry(model: str, status: str, **variant: object) -> dict:
    v = {**Variant().to_dict(), **variant}
    return {"model": model, "status": status, "exporter": v["exporter"], "opset": 18, "max_abs_diff": 1e-6,
            "top1_agreement": 1.0, "first_divergence": None, "checks": [], "variant": v,
            "error": "no such provider" if status == "skipped" else None}


def test_merge_keeps_variants_apart_and_tables_show_varying_columns() -> None:
    a = {"schema": 1, "environment": {}, "models": [_entry("resnet18", "passed", precision="fp32"),
                                                    _entry("resnet18", "passed", precision="fp16")]}
    b = {"schema": 1, "environment": {}, "models": [_entry("resnet18", "failed", precision="fp16", ort_opt="disabled"),
                                                    _entry("resnet18", "skipped", provider="CUDAExecutionProvider")]}
    merged = merge_reports([a, b])
    assert len(merged["models"]) == 4 and "notes" not in merged  # nothing overwritten
    assert len({entry_key(e) for e in merged["models"]}) == 4
    again = merge_reports([a, a])
    assert len(again["models"]) == 2 and len(again["notes"]) == 2  # the same variant twice: one kept
    md = render_markdown(merged)
    header = next(line for line in md.splitlines() if line.startswith("| model"))
    assert "precision" in header and "ort_opt" in header and "provider" in header and "image_size" not in header
    assert "| `resnet18` | failed | dynamo | 18 | fp16 | disabled | CPUExecutionProvider |" in md
    assert "4 models: 2 passed, 1 failed, 0 errors, 1 skipped" in md and "no such provider" in md
    page = render_html(merged)
    assert "<th>precision</th>" in page and "<td>fp16</td>" in page
    old = {"schema": 1, "environment": {}, "models": [{"model": "vit", "status": "passed", "exporter": "dynamo"}]}
    assert "| model | status | exporter | opset | max abs diff |" in render_markdown(old)  # pre-matrix reports


# -- the gate ------------------------------------------------------------------------------------------------


def test_matrix_gives_one_item_per_variant(pytester: pytest.Pytester, export_cache: str) -> None:
    """2 models x 2 exporters x 2 precisions x 2 ORT levels = 16 items with distinct variants, plus a provider
    this build lacks: 16 more, each skipped with the reason. The fp16 entries' files hold float16 weights."""
    pytest.importorskip("pytest_onnx_parity.onnxfile.fp16")
    import onnx

    result = gate(pytester, export_cache, "--onnx-parity-models", "test_resnet,test_vit",
                  "--onnx-parity-exporter", "dynamo,torchscript", "--onnx-parity-precision", "fp32,fp16",
                  "--onnx-parity-ort-opt", "disabled,all", "--onnx-parity-providers",
                  "CPUExecutionProvider,NoSuchExecutionProvider", "--onnx-parity-layers", "on-failure",
                  "--onnx-parity-report", "r.json", "-rs")
    result.assert_outcomes(passed=16, skipped=16)
    result.stdout.fnmatch_lines(["*SKIPPED*NoSuchExecutionProvider is not in this onnxruntime build*"])
    result.stdout.fnmatch_lines(["model*exporter*precision*ort_opt*provider*status*"])
    entries = json.loads((pytester.path / "r.json").read_text())["models"]
    assert len(entries) == 32
    assert len({(e["model"], json.dumps(e["variant"], sort_keys=True)) for e in entries}) == 32
    ran = [e for e in entries if e["variant"]["provider"] == "CPUExecutionProvider"]
    assert {e["status"] for e in ran} == {"passed"}
    assert all(e["status"] == "skipped" and "NoSuchExecutionProvider" in e["error"] for e in entries if e not in ran)
    exports = {e["onnx_path"] for e in ran if e["variant"]["precision"] == "fp32"}
    assert len(exports) == 4  # one file per model and exporter, shared by both ORT levels
    for e in ran:
        weights = [t.data_type for t in onnx.load(e["onnx_path"]).graph.initializer if t.data_type in (1, 10)]
        want = onnx.TensorProto.FLOAT16 if e["variant"]["precision"] == "fp16" else onnx.TensorProto.FLOAT
        assert weights.count(want) > len(weights) // 2, e["variant"]


def test_image_sizes_from_one_dynamic_file(pytester: pytest.Pytester, export_cache: str) -> None:
    """A CNN at its own size and at an odd one from the same file; a ViT at a size its patches cannot tile is
    skipped with the reason."""
    result = gate(pytester, export_cache, "--onnx-parity-models", "test_resnet,test_vit", "--onnx-parity-exporter",
                  "torchscript", "--onnx-parity-image-size", "160,255", "--onnx-parity-precision", "fp32,int8",
                  "--onnx-parity-layers", "on-failure", "--onnx-parity-report", "r.json", "-rs")
    result.assert_outcomes(passed=3, skipped=5)
    result.stdout.fnmatch_lines(["*SKIPPED*test_vit: the torch model cannot take 255x255 images*patch size*"])
    result.stdout.fnmatch_lines(["*SKIPPED*int8 with random weights*would check nothing*"])
    report = json.loads((pytester.path / "r.json").read_text())["models"]
    assert {e["status"] for e in report if e["variant"]["precision"] == "int8"} == {"skipped"}
    entries = {(e["model"], e["variant"]["image_size"]): e for e in report if e["variant"]["precision"] == "fp32"}
    assert entries[("test_resnet", 255)]["onnx_path"] == entries[("test_resnet", 160)]["onnx_path"]
    real = next(c for c in entries[("test_resnet", 255)]["checks"] if c["name"] == "real_images")
    assert real["status"] == "passed"


def test_a_size_dependent_fault_fails_at_the_odd_size_naming_the_layer(tmp_path: Path) -> None:
    """TorchScript bakes a Python number taken from the input's width into the graph: equal at the native
    size, wrong at 255. The check fails there and names the first divergence."""
    import torch

    from pytest_onnx_parity import check_parity
    from pytest_onnx_parity.model.build import load_model

    model = load_model("test_resnet", "random")

    class WidthScaled(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x) * (float(x.shape[-1]) / 40.0)  # 40: layer2's input width at 160

    model.layer2 = WidthScaled(model.layer2)
    kw = dict(exporter="torchscript", use_cache=False, real_images=False)
    native = check_parity(model, image_size=160, **kw)
    assert native.passed, native.failure_message()
    odd = check_parity(model, image_size=255, **kw)
    assert odd.status == "failed" and odd.variant["image_size"] == 255
    assert odd.first_divergence is not None and odd.first_divergence.startswith("layer2"), odd.first_divergence


def test_embedded_preprocessing_variant(pytester: pytest.Pytester, export_cache: str) -> None:
    result = gate(pytester, export_cache, "--onnx-parity-models", "test_resnet", "--onnx-parity-exporter", "torchscript",
                  "--onnx-parity-embed-preprocessing", "--onnx-parity-report", "r.json")
    result.assert_outcomes(passed=2)
    entries = {e["variant"]["preprocessing"]: e for e in json.loads((pytester.path / "r.json").read_text())["models"]}
    emb = entries["embedded"]
    from pytest_onnx_parity.onnxfile.pregraph import embedded_info

    assert embedded_info(emb["onnx_path"]) is not None and embedded_info(entries["external"]["onnx_path"]) is None
    real = next(c for c in emb["checks"] if c["name"] == "real_images")
    assert real["status"] == "passed" and real["distinct_sizes"] > 1 and real["preprocessing"] == "embedded"
    assert {c["name"]: c["status"] for c in emb["checks"]}["layers"] == "passed"


def test_embedded_file_with_wrong_preprocessing_fails(tmp_path: Path, export_cache: str) -> None:
    """A file whose graph normalises with another mean than the model's: the logits (through the graph) and
    real-image checks fail, while the model part alone still passes the per-layer check."""
    import onnx

    from pytest_onnx_parity import check_parity, export_onnx
    from pytest_onnx_parity.onnxfile.metadata import read_data_config
    from pytest_onnx_parity.model.build import load_model
    from pytest_onnx_parity.onnxfile.pregraph import embed_preprocessing

    model = load_model("test_resnet", "random")
    plain = export_onnx(model, exporter="torchscript", cache_dir=export_cache)
    good = export_onnx(model, tmp_path / "good.onnx", exporter="torchscript", cache_dir=export_cache, embed_preprocessing=True)
    ok = check_parity(model, onnx=good.path)
    assert ok.passed, ok.failure_message()
    assert ok.variant["preprocessing"] == "embedded"
    cfg = read_data_config(plain.path)
    wrong = embed_preprocessing(onnx.load(str(plain.path)), {**cfg, "mean": [0.2, 0.3, 0.4]})
    onnx.save_model(wrong, str(tmp_path / "wrong.onnx"))
    bad = check_parity(model, onnx=tmp_path / "wrong.onnx")
    statuses = {c.name: c.status for c in bad.checks}
    assert bad.status == "failed" and statuses["logits"] == "failed" and statuses["real_images"] == "failed"
    assert statuses["layers"] == "passed"
    assert np.isfinite(bad.max_abs_diff) and bad.max_abs_diff > 1e-3
    # an unreadable photo in the folder: the embedded real-image check names it, no raw decoder error
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    broken = check_parity(model, onnx=good.path, layers="never", images=str(folder)).check("real_images")
    assert broken.status == "error" and "broken.jpg" in broken.message and "Traceback" not in broken.message


def test_int8_thresholds_are_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--onnx-parity", "--onnx-parity-int8-min-agreement", "1.5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--onnx-parity-int8-min-agreement: bad value '1.5'" in result.stderr.str()
    from pytest_onnx_parity.options import ParityOptions
    from pytest_onnx_parity.settings import Settings

    opts = ParityOptions.from_kwargs(**Settings(int8_min_agreement=0.5, int8_max_accuracy_drop=3.0).parity_options())
    assert (opts.int8_min_agreement, opts.int8_max_accuracy_drop) == (0.5, 3.0)
    assert ParityOptions().int8_min_agreement is None  # None: the int8 profile's default
