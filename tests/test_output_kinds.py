"""Outputs that are not 1000 ImageNet logits: classifiers of any size, pooled embeddings, features.

The kind is decided once (runtime/outputs.output_kind) and recorded (ParityResult.output_kind); every
check works for every kind; a 5% fault planted in one layer of the torch model fails against the clean
file, and the message names the output that departs.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import numpy as np
import pytest

from pytest_onnx_parity.checks.output_kinds import compare_outputs, nearest_neighbours
from pytest_onnx_parity.tolerances import Tolerance
from pytest_onnx_parity.runtime.outputs import export_output_names, flatten, label_names, layout_of, output_kind
from pytest_onnx_parity.tolerances import MIN_NEIGHBOUR_SAMPLES, min_cosine, neighbour_tie

FEATURES = dict(features_only=True, out_indices=(2, 3, 4))
FAST = dict(layers="never", real_images=False)


@contextlib.contextmanager
def planted(model: Any, layer: str, factor: float = 1.05) -> Iterator[None]:
    """The torch model with one layer's weight scaled by ``factor`` (the file keeps the clean weights)."""
    import torch

    weight = dict(model.named_modules())[layer].weight
    with torch.no_grad():
        weight.mul_(factor)
    try:
        yield
    finally:
        with torch.no_grad():
            weight.div_(factor)


def statuses(result: Any) -> dict[str, str]:
    return {c.name: c.status for c in result.checks}


# --- the rule, without torch -------------------------------------------------------------------------------

def test_the_output_kind_is_one_rule() -> None:
    assert output_kind([np.zeros((2, 4, 3, 3))], 0) == "features"  # a list: features_only
    assert output_kind((np.zeros((2, 5)),), 5) == "features"
    assert output_kind(np.zeros((2, 8, 7, 7)), 0) == "features"  # unpooled
    assert output_kind(np.zeros((2, 1000, 7, 7)), 1000) == "features"  # a head applied per position
    assert output_kind(np.zeros((2, 512)), 0) == "embedding"
    assert output_kind(np.zeros((2, 10)), 10) == "logits"
    assert output_kind(np.zeros((2, 10)), None) == "logits"
    assert export_output_names("logits", 1) == ["logits"] and export_output_names("embedding", 1) == ["embedding"]
    assert export_output_names("features", 3) == ["features_0", "features_1", "features_2"]


def test_outputs_are_flattened_per_sample_with_a_layout() -> None:
    outs = [np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2), np.ones((2, 5), np.float32)]
    layout = layout_of(outs, None)
    flat = flatten(outs)
    assert flat.shape == (2, 17) and layout.width == 17 and layout.kind == "features"
    assert [s.label for s in layout.segments] == ["output 0 (N, 3, 2, 2)", "output 1 (N, 5)"]
    seg = layout.segments[0]
    np.testing.assert_array_equal(seg.take(flat).reshape(2, 3, 2, 2), outs[0])
    logits = np.ones((2, 10), np.float32)
    assert flatten([logits]) is logits  # a classifier's logits as they are
    assert "output 1" in (layout.mismatch([outs[0], np.ones((2, 6))], ["a", "b"]) or "")


def test_label_names_come_from_one_place() -> None:
    names = [f"c{i}" for i in range(10)]
    assert label_names(SimpleNamespace(num_classes=10, pretrained_cfg={"label_names": names})) == names
    assert label_names(SimpleNamespace(num_classes=10, pretrained_cfg={})) is None  # no ImageNet subset of 10
    assert label_names(SimpleNamespace(num_classes=3, pretrained_cfg={"label_names": names})) is None  # wrong count
    imagenet = label_names(SimpleNamespace(num_classes=1000, pretrained_cfg={}))
    assert imagenet is not None and len(imagenet) == 1000 and imagenet[0].startswith("tench")
    assert label_names(SimpleNamespace(num_classes=0, pretrained_cfg={"num_classes": 1000})) is None


def test_topk_messages_name_the_classes_when_known() -> None:
    from pytest_onnx_parity import compare_topk

    e = np.array([[5.0, 1.0, 0.0], [0.0, 4.0, 1.0]], np.float32)
    a = np.array([[1.0, 5.0, 0.0], [0.0, 4.0, 1.0]], np.float32)
    cmp = compare_topk(e, a, k=1, labels=["cat", "dog", "bird"])
    assert not cmp.passed and "0 'cat'" in cmp.message() and "1 'dog'" in cmp.message()
    assert "'" not in compare_topk(e, a, k=1).message()


def test_embedding_cosine_and_nearest_neighbours() -> None:
    rng = np.random.default_rng(0)
    e = rng.standard_normal((5, 64)).astype(np.float32)
    layout = layout_of(e, 0)
    loose = lambda t: Tolerance(10.0, 0.0)  # noqa: E731 - an element-wise tolerance that passes anything
    assert compare_outputs(e, e.copy(), layout, loose).passed
    turned = np.roll(e, 1, axis=1)  # the same magnitudes, other directions: cosine catches it
    cmp = compare_outputs(e, turned, layout, loose)
    assert not cmp.passed and all(c.passed for _, c in cmp.parts) and "Cosine similarity below" in cmp.message("t")
    # a batch of 2 cannot change a neighbour: not judged, saying so
    two = nearest_neighbours(e[:2], e[:2][::-1], neighbour_tie("fp32"))
    assert two.agreement is None and f"at least {MIN_NEIGHBOUR_SAMPLES} samples" in two.sentence()
    # sample 0 is nearest to 1 under torch; ONNX moves it next to 2: a real disagreement
    base = np.eye(4, 8, dtype=np.float64)
    ex = base.copy()
    ex[0] = base[1] * 0.9 + base[0] * 0.1
    ac = ex.copy()
    ac[0] = base[2] * 0.9 + base[0] * 0.1
    nn = nearest_neighbours(ex, ac, neighbour_tie("fp32"))
    assert nn.disagreements and nn.disagreements[0]["sample"] == 0 and nn.disagreements[0]["onnx"] == 2
    assert nearest_neighbours(ex, ex, neighbour_tie("fp32")).agreement == 1.0
    assert min_cosine("fp16") < min_cosine("fp32") < 1.0


def test_int8_outputs_that_are_not_logits_are_judged_by_cosine() -> None:
    from pytest_onnx_parity.checks.int8 import int8_cosine_verdict

    rng = np.random.default_rng(1)
    outs = [rng.standard_normal((4, 8, 3, 3)).astype(np.float32), rng.standard_normal((4, 16)).astype(np.float32)]
    layout, e = layout_of(outs, None), flatten(outs)
    assert int8_cosine_verdict(e, e + 0.01 * rng.standard_normal(e.shape), layout).status == "passed"
    broken = e.copy()
    broken[:, layout.segments[1].offset:] = rng.standard_normal((4, 16))
    v = int8_cosine_verdict(e, broken, layout)
    assert v.status == "failed" and "output 1 (N, 16)" in v.message


# --- whole runs, random weights ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def embedding(export_cache: str) -> tuple[Any, Any]:
    from pytest_onnx_parity import export_onnx, load_model

    model = load_model("resnet18", num_classes=0)
    return model, export_onnx(model, exporter="torchscript", cache_dir=export_cache)


@pytest.fixture(scope="module")
def features(export_cache: str) -> tuple[Any, Any]:
    from pytest_onnx_parity import export_onnx, load_model

    model = load_model("efficientnet_b0", **FEATURES)
    return model, export_onnx(model, exporter="dynamo", cache_dir=export_cache)


def test_an_embedding_passes_every_check_and_a_5pct_fault_fails(embedding: tuple[Any, Any]) -> None:
    from pytest_onnx_parity import check_parity
    from pytest_onnx_parity.runtime.session import make_session

    model, exp = embedding
    assert [o.name for o in make_session(exp.path).get_outputs()] == ["embedding"]
    r = check_parity(model, onnx=exp.path, layers="always")
    assert r.passed, r.failure_message()
    assert r.output_kind == "embedding" and r.to_dict()["output_kind"] == "embedding"
    assert statuses(r) == {"weights": "passed", "data_config": "passed", "logits": "passed", "topk": "skipped",
                           "batch_consistency": "passed", "real_images": "passed", "headroom": "passed",
                           "layers": "passed"}
    logits, topk, real = r.check("logits"), r.check("topk"), r.check("real_images")
    assert "cosine similarity per sample" in logits.message and logits.details["cosine_min"] > min_cosine("fp32")
    assert "nearest neighbour not judged" in logits.message  # a random batch of 2
    assert "embedding (N, 512)" in topk.message and "top-k agreement has no meaning" in topk.message
    assert real.details["nearest_neighbour"]["agreement"] == 1.0 and real.details["images"] >= 3  # the photos
    with planted(model, "layer3.0.conv2"):
        bad = check_parity(model, onnx=exp.path, **FAST)
    assert bad.check("logits").status == "failed" and not bad.passed
    assert "Embeddings on a random batch are not close!" in bad.check("logits").message


def test_features_only_compares_every_output_and_names_the_one_a_fault_moves(features: tuple[Any, Any]) -> None:
    from pytest_onnx_parity import check_parity
    from pytest_onnx_parity.runtime.session import make_session

    model, exp = features
    outs = make_session(exp.path).get_outputs()
    assert [o.name for o in outs] == ["features_0", "features_1", "features_2"]  # the dynamo exporter
    r = check_parity(model, onnx=exp.path, layers="always")
    assert r.passed, r.failure_message()
    assert r.output_kind == "features" and statuses(r)["topk"] == "skipped" and statuses(r)["layers"] == "passed"
    logits = r.check("logits")
    for label in ("output 0 (N, 40, 28, 28)", "output 1 (N, 112, 14, 14)", "output 2 (N, 320, 7, 7)"):
        assert f"{label} close" in logits.message and label in r.check("real_images").message
    atols = [p["atol"] for p in logits.details["outputs"]]
    assert len(set(atols)) == 3  # each output's tolerance from its own magnitude
    with planted(model, "blocks.5.0.conv_pw"):  # feeds only the last output (blocks.6)
        bad = check_parity(model, onnx=exp.path, **FAST)
    msg = bad.check("logits").message
    assert bad.check("logits").status == "failed", msg
    assert "output 2 (N, 320, 7, 7): not close!" in msg
    assert "output 0 (N, 40, 28, 28) close" in msg and "output 1 (N, 112, 14, 14) close" in msg


def test_unpooled_features_pass(export_cache: str) -> None:
    from pytest_onnx_parity import check_parity, load_model

    # timm's resnet18(global_pool='') keeps its 1000-class fc and fails on the 4-D map in timm itself;
    # without the head (num_classes=0) it returns the unpooled (N, 512, 7, 7) map
    model = load_model("resnet18", num_classes=0, global_pool="")
    r = check_parity(model, exporter="torchscript", cache_dir=export_cache, layers="never")
    assert r.passed, r.failure_message()
    assert r.output_kind == "features" and "output 0 (N, 512, 7, 7) close" in r.check("logits").message


def test_a_10_class_head_passes_and_names_its_classes(export_cache: str) -> None:
    from pytest_onnx_parity import check_parity, load_model

    model = load_model("resnet18", num_classes=10)
    plain = check_parity(model, exporter="torchscript", cache_dir=export_cache, **FAST)
    assert plain.passed and plain.output_kind == "logits" and plain.check("topk").status == "passed"
    model.pretrained_cfg = {**model.pretrained_cfg, "label_names": [f"kind-{i}" for i in range(10)]}  # as timm's loader
    named = check_parity(model, exporter="torchscript", cache_dir=export_cache, **FAST)
    assert named.passed and "'kind-" in named.check("topk").message


def test_a_features_file_made_elsewhere_is_matched_by_order(features: tuple[Any, Any], tmp_path: Path) -> None:
    import warnings

    import torch

    from pytest_onnx_parity import check_parity, load_model, stamp_onnx

    model, _ = features
    path = tmp_path / "plain.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.randn(1, 3, 224, 224), str(path), dynamo=False)  # names of its own choice
    stamp_onnx(path, model)
    r = check_parity(model, onnx=path, **FAST)
    assert r.passed and r.output_kind == "features", r.failure_message()
    other = load_model("efficientnet_b0", features_only=True, out_indices=(3, 4))
    wrong = check_parity(other, onnx=path, **FAST)
    assert wrong.status == "error" and "the model returns features: 2 outputs" in wrong.error
    assert "matched to the model's by order" in wrong.error and "--onnx-parity-output" in wrong.error


def test_a_features_bundle_reproduces_per_output(features: tuple[Any, Any], tmp_path: Path) -> None:
    from pytest_onnx_parity.options import ParityOptions
    from pytest_onnx_parity.report.bundle import write_bundle
    from pytest_onnx_parity.run import ParityRun

    model, exp = features
    with planted(model, "blocks.5.0.conv_pw"), ParityRun(model, exp.path, ParityOptions(**FAST)) as run:
        assert run.execute().status == "failed"
        folder = write_bundle(run, tmp_path)
    meta = json.loads((folder / "bundle.json").read_text())
    assert meta["output_kind"] == "features" and len(meta["segments"]) == 3 and not meta["problems"]
    out = subprocess.run([sys.executable, str(folder / "reproduce.py")], capture_output=True, text=True)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "output 2 (N, 320, 7, 7):" in out.stdout and "top-1 agreement" not in out.stdout
