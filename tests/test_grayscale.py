"""1-channel (grayscale, ``in_chans=1``) models: preprocess, the embedded graph and real images, as timm does it.

timm's train.py and validate.py load images for such a model with ``input_img_mode = 'L'`` (Pillow's
``convert("L")``, before the eval transform), and its data config has ``input_size (1, H, W)`` and
one-value mean and std.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from PIL import Image

from pytest_onnx_parity.errors import OnnxParityError, SpecError
from pytest_onnx_parity.onnxfile.metadata import DATA_CONFIG_KEY
from pytest_onnx_parity.preprocessing.decode import ChannelsError, image_mode, open_image
from pytest_onnx_parity.preprocessing.images import iter_batches, load_images, real_batch
from pytest_onnx_parity.preprocessing.transform import EvalTransform, preprocess
from pytest_onnx_parity.testing import strategies as ops

timm_data = pytest.importorskip("timm.data")

TOL = 1e-4  # tests/test_preprocess.py's tolerance against timm's transform (normalised units)
GRAPH_TOL = 1e-5  # tests/test_pregraph.py's tolerance of the graph against preprocess (exact before normalising)
FIELDS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
HYPOTHESIS = settings(deadline=None, database=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
GRAY = {"input_size": [1, 224, 224], "interpolation": "bicubic", "mean": [0.449], "std": [0.226],
        "crop_pct": 0.95, "crop_mode": "center"}


def pil_luma(rgb: np.ndarray) -> np.ndarray:
    """Pillow's ``convert("L")`` written out: ITU-R 601-2 luma in its integer arithmetic."""
    x = rgb.astype(np.int64)
    return ((x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)


def timm_eval_gray(image: Image.Image, config: dict) -> np.ndarray:
    """timm's eval pipeline for a 1-channel model: its loader's convert('L'), then create_transform."""
    transform = timm_data.create_transform(**{k: config[k] for k in FIELDS}, is_training=False)
    return transform(image.convert("L")).numpy()


def gray(cfg: dict) -> dict:
    """A 3-channel config made 1-channel, its mean and std averaged."""
    return dict(cfg, input_size=(1, *cfg["input_size"][-2:]), mean=(float(np.mean(cfg["mean"])),),
                std=(float(np.mean(cfg["std"])),))


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """One torch thread for this module (conftest.py); the photos are conftest's ``photo_paths``/``photos``."""


# --- the luma and the mode rule ---------------------------------------------------------------------


def test_pillow_luma_is_the_integer_formula():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    rgb[0, :8] = [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [1, 1, 1], [254, 254, 254], [128, 127, 129]]
    assert np.array_equal(np.asarray(Image.fromarray(rgb).convert("L")), pil_luma(rgb))
    # grey pixels are their own luma, so an L image through RGB and back is unchanged
    assert np.array_equal(pil_luma(np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, 1)), np.arange(256))


def test_image_mode_follows_the_channel_count_as_timm_does():
    assert image_mode(GRAY) == "L" and image_mode(dict(GRAY, input_size=(3, 224, 224))) == "RGB"
    assert image_mode(dict(GRAY, input_size=(224, 224))) == "RGB" and image_mode(1) == "L"
    assert EvalTransform.from_config(GRAY).mode == "L" and EvalTransform.from_config(GRAY).channels == 1
    for channels in (2, 4, 0):
        with pytest.raises(ChannelsError, match=r"\(3, H, W\) or \(1, H, W\)") as info:
            image_mode(channels)
        assert isinstance(info.value, OnnxParityError)


# --- preprocess ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("crop_mode", ["center", "squash", "border"])
def test_preprocess_matches_timm_on_l_converted_photos(photos, photo_paths, crop_mode):
    for interpolation in ("bilinear", "bicubic", "nearest", "lanczos"):
        for size, pct in (((1, 224, 224), 0.95), ((1, 160, 256), 1.0), ((1, 96, 96), 1.15)):
            cfg = dict(GRAY, input_size=size, crop_pct=pct, crop_mode=crop_mode, interpolation=interpolation)
            expected = np.stack([timm_eval_gray(p, cfg) for p in photos])
            assert expected.shape == (len(photos), *size)
            inputs = {
                "paths": photo_paths,
                "PIL images": photos,
                "HxWx3 arrays": [np.asarray(p) for p in photos],
                "L images": [p.convert("L") for p in photos],
                "HxW arrays": [np.asarray(p.convert("L")) for p in photos],
                "HxWx1 arrays": [np.asarray(p.convert("L"))[:, :, None] for p in photos],
            }
            for kind, images in inputs.items():
                got = preprocess(images, cfg)
                assert got.shape == expected.shape and got.dtype == np.float32, (kind, got.shape)
                diff = float(np.abs(got - expected).max())
                assert diff <= TOL, f"{kind}, {cfg}: max abs diff {diff:.3g}"


def test_other_pillow_modes_convert_straight_to_l_like_timm():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    images = {
        "RGBA": Image.fromarray(np.concatenate([rgb, rgb[:, :, :1]], axis=2)),
        "LA": Image.fromarray(rgb).convert("LA"),
        "P": Image.fromarray(rgb).convert("P"),
        "CMYK": Image.fromarray(rgb).convert("CMYK"),
        "I;16": Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257),
        "F": Image.fromarray(rgb[:, :, 1].astype(np.float32)),
    }
    for crop_mode in ("center", "squash", "border"):
        cfg = dict(GRAY, input_size=(1, 24, 16), crop_mode=crop_mode)
        for mode, image in images.items():
            assert image.mode == mode
            got = preprocess(image, cfg)
            assert got.shape == (1, 1, 24, 16)
            assert float(np.abs(got[0] - timm_eval_gray(image, cfg)).max()) <= TOL, (mode, crop_mode)


@HYPOTHESIS
@given(image=ops.images(max_side=48), cfg=ops.data_configs(max_side=40, max_crop_pct=1.15))
def test_generated_images_and_configs_match_timm(image, cfg):
    cfg = gray(cfg)
    try:
        expected = timm_eval_gray(image, cfg)
    except ValueError:  # border mode on a very thin image: timm fails, so must we
        with pytest.raises(OnnxParityError, match="resizes to"):
            preprocess(image, cfg)
        return
    got = preprocess(image, cfg)[0]
    assert got.shape == expected.shape
    assert float(np.abs(got - expected).max()) <= TOL, (image.mode, image.size, cfg)


def test_real_batch_and_iter_batches_follow_the_config(photo_paths):
    cfg = dict(GRAY, input_size=[1, 64, 48])
    batch, paths = real_batch(cfg)
    assert batch.shape == (len(paths), 1, 64, 48) and paths == photo_paths
    streamed = np.concatenate([b for b, _ in iter_batches(photo_paths, cfg, batch_size=3, workers=2)])
    assert np.array_equal(streamed, batch)
    expected = np.stack([timm_eval_gray(Image.open(p), cfg) for p in photo_paths])  # timm: Image.open(p).convert("L")
    assert float(np.abs(batch - expected).max()) <= TOL
    assert all(im.mode == "L" for im in load_images(photo_paths, image_mode(cfg)))


def test_config_errors_name_the_fix():
    image = np.zeros((8, 8, 3), np.uint8)
    for channels in (2, 4):
        with pytest.raises(ChannelsError, match=rf"input_size\[0\] = {channels}.*\(1, H, W\)") as info:
            preprocess(image, dict(GRAY, input_size=(channels, 32, 32), mean=[0.5] * channels, std=[0.5] * channels))
        assert isinstance(info.value, SpecError) and isinstance(info.value, OnnxParityError)
    # a 1-channel config with RGB's three means: timm's Normalize fails on it too; the fix is one value
    with pytest.raises(ChannelsError, match=r"1-channel grayscale.*pass a 1-value mean, e.g. their average \[0.449\]"):
        preprocess(image, dict(GRAY, mean=[0.485, 0.456, 0.406]))
    with pytest.raises(ChannelsError, match="std .* has 2 values"):
        preprocess(image, dict(GRAY, input_size=(3, 32, 32), mean=[0.5], std=[0.5, 0.5]))


def test_three_channel_configs_are_unchanged(photos):
    cfg = dict(GRAY, input_size=(3, 224, 224), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    transform = timm_data.create_transform(**cfg, is_training=False)
    for image in (photos[1], photos[1].convert("L")):
        got = preprocess(image, cfg)
        assert got.shape == (1, 3, 224, 224)
        assert float(np.abs(got[0] - transform(image.convert("RGB")).numpy()).max()) <= TOL
    one_mean = dict(cfg, mean=(0.5,), std=(0.5,))  # one value stands for every channel, as before
    assert EvalTransform.from_config(one_mean).mean == (0.5, 0.5, 0.5)


def test_no_torch_import_for_a_gray_config(photo_paths):
    code = (
        "import sys\n"
        "from pytest_onnx_parity import preprocess\n"
        f"batch = preprocess({[str(p) for p in photo_paths]!r}, {GRAY!r})\n"
        "assert batch.shape == (4, 1, 224, 224), batch.shape\n"
        "heavy = sorted(m for m in ('torch', 'timm', 'torchvision', 'onnx', 'onnxruntime') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# --- the embedded preprocessing graph ----------------------------------------------------------------------


def _session(model):  # type: ignore[no-untyped-def]
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _run(model, arrays):  # type: ignore[no-untyped-def]
    sess = _session(model)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: a[None]})[0] for a in arrays])


def _random_images(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = [(40, 60), (300, 200), (17, 300), (224, 224), (1000, 90), (9, 9), (480, 640)]
    return [rng.integers(0, 256, shape + (3,), dtype=np.uint8) for shape in shapes]


def test_graph_luma_equals_pillow_pixel_for_pixel():
    from pytest_onnx_parity import preprocessing_graph

    # no resize, no crop: the graph's output is Pillow's convert("L") itself
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (256, 192, 3), dtype=np.uint8)
    rgb[0, :5] = [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]
    cfg = dict(GRAY, input_size=(1, 256, 192), crop_pct=1.0, crop_mode="squash", mean=[0.0], std=[1.0])
    got = np.rint(_run(preprocessing_graph(cfg), [rgb]) * 255).astype(np.uint8)
    assert got.shape == (1, 1, 256, 192)
    assert np.array_equal(got[0, 0], np.asarray(Image.fromarray(rgb).convert("L")))
    assert np.array_equal(got[0, 0], pil_luma(rgb))


@pytest.mark.parametrize("crop_mode", ["center", "squash", "border"])
def test_graph_equals_preprocess_on_random_images(crop_mode):
    from pytest_onnx_parity import preprocessing_graph

    images = _random_images(sum(map(ord, crop_mode)))
    for interpolation in ("bilinear", "bicubic", "box", "hamming", "lanczos"):
        for size, pct in (((1, 224, 224), 0.95), ((1, 160, 256), 1.0), ((1, 48, 48), 1.15)):
            cfg = dict(GRAY, input_size=size, crop_pct=pct, crop_mode=crop_mode, interpolation=interpolation)
            raw = dict(cfg, mean=[0.0], std=[1.0])  # the uint8 pixels, exactly
            transform = EvalTransform.from_config(raw)
            fits = [im for im in images if min(transform.resized_size(im.shape[1], im.shape[0])) >= 1]
            pixels = np.rint(_run(preprocessing_graph(raw), fits) * 255).astype(np.uint8)
            for image, got in zip(fits, pixels):
                expected = transform.pixels(Image.fromarray(image)).transpose(2, 0, 1)
                assert got.shape == expected.shape == size, (got.shape, expected.shape)
                assert np.array_equal(got, expected), (cfg, image.shape, int((got != expected).sum()))
            out = _run(preprocessing_graph(cfg), fits)
            expected = preprocess(fits, cfg)
            assert out.shape == expected.shape and out.dtype == np.float32
            assert float(np.abs(out - expected).max()) <= GRAPH_TOL, (cfg, float(np.abs(out - expected).max()))


def test_graph_takes_rgba_batches_and_nchw():
    from pytest_onnx_parity import preprocessing_graph

    rng = np.random.default_rng(5)
    cfg = dict(GRAY, input_size=(1, 24, 16), crop_pct=1.0, crop_mode="squash")
    for shape in ((3, 1200, 1600, 4), (2, 1600, 90, 3), (2, 20, 30, 3)):  # both pass orders, long windows
        batch = rng.integers(0, 256, shape, dtype=np.uint8)
        got = _session(preprocessing_graph(cfg)).run(None, {"pixels": batch})[0]
        expected = preprocess([image[:, :, :3] for image in batch], cfg)
        assert got.shape == (shape[0], 1, 24, 16)
        assert float(np.abs(got - expected).max()) <= GRAPH_TOL, shape
    image = rng.integers(0, 256, (70, 50, 3), dtype=np.uint8)
    nchw = _run(preprocessing_graph(GRAY, layout="NCHW"), [image.transpose(2, 0, 1)])
    assert float(np.abs(nchw - preprocess(image, GRAY)).max()) <= GRAPH_TOL


def _identity_model(cfg: dict, channels: int):  # type: ignore[no-untyped-def]
    from onnx import TensorProto, helper

    h, w = cfg["input_size"][1:]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", channels, h, w])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", channels, h, w])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    helper.set_model_props(model, {DATA_CONFIG_KEY: json.dumps(cfg)})
    return model


def test_embedded_file_takes_rgb_pixels_and_gives_one_channel(photos):
    onnx = pytest.importorskip("onnx")
    from pytest_onnx_parity.onnxfile.embedded import run_embedded
    from pytest_onnx_parity.onnxfile.pregraph import EmbeddingError, embed_preprocessing, embedded_info

    embedded = embed_preprocessing(_identity_model(GRAY, 1))  # config from the file's own metadata
    onnx.checker.check_model(embedded)
    info = embedded_info(embedded)
    assert info["data_config"]["input_size"] == [1, 224, 224] and info["data_config"]["mean"] == [0.449]
    assert [d.dim_param or d.dim_value for d in embedded.graph.output[0].type.tensor_type.shape.dim][1] == 1
    sess = _session(embedded)
    expected = preprocess(photos, GRAY)
    inputs = [photos, [p.convert("L") for p in photos], [np.asarray(p.convert("L")) for p in photos],
              [np.asarray(p.convert("L"))[:, :, None] for p in photos], [p.convert("RGBA") for p in photos]]
    for images in inputs:
        got = run_embedded(sess, images)
        assert got.shape == expected.shape == (len(photos), 1, 224, 224)
        assert float(np.abs(got - expected).max()) <= GRAPH_TOL
    # the config's channels must be the model's
    with pytest.raises(EmbeddingError, match="with 1 channel"):
        embed_preprocessing(_identity_model(dict(GRAY, input_size=[3, 224, 224], mean=[0.5] * 3, std=[0.5] * 3), 3), GRAY)
    with pytest.raises(EmbeddingError, match="with 3 channels"):
        embed_preprocessing(_identity_model(GRAY, 1), dict(GRAY, input_size=[3, 224, 224], mean=[0.5], std=[0.5]))


# --- real images and the whole run ---------------------------------------------------------------------------


def test_real_image_sides_decode_by_the_models_channels(photo_paths):
    torch = pytest.importorskip("torch")
    from pytest_onnx_parity.checks.real_images import timm_eval_transform
    from pytest_onnx_parity.model.record import LoadedModel, ModelRecord
    from pytest_onnx_parity.preprocessing.images import model_image_mode

    config = dict(GRAY, input_size=[1, 64, 64])
    model = LoadedModel(torch.nn.Conv2d(1, 4, 3), ModelRecord(data_config=config, data_config_source="override"))
    assert model_image_mode(model) == "L"
    tf = timm_eval_transform(model)
    image = open_image(photo_paths[0], model_image_mode(model))
    assert image.mode == "L" and tuple(tf(image).shape) == (1, 64, 64)
    assert float(np.abs(tf(image).numpy() - preprocess(photo_paths[0], config)[0]).max()) <= TOL
    rgb = ModelRecord(data_config=dict(GRAY, input_size=[3, 64, 64], mean=[0.5] * 3, std=[0.5] * 3))
    assert model_image_mode(LoadedModel(model.module, rgb)) == "RGB"


def test_resnet18_in_chans_1_passes_end_to_end(tmp_path):
    import pytest_onnx_parity
    from pytest_onnx_parity.preprocessing.dataconfig import resolve_data_config

    model = pytest_onnx_parity.load_model("resnet18", in_chans=1)
    config = {"input_size": [1, 224, 224], "interpolation": "bilinear", "mean": [0.449], "std": [0.226],
              "crop_pct": 0.875, "crop_mode": "center"}
    before = resolve_data_config(model)
    for embed in (False, True):  # the config given as overrides: the run's record holds it, the module is not changed
        result = pytest_onnx_parity.check_parity(model, cache_dir=str(tmp_path), embed_preprocessing=embed,
                                                 data_config=config)
        checks = {c.name: c for c in result.checks}
        assert result.passed, result.failure_message()
        assert checks["real_images"].status == "passed", checks["real_images"].message
        assert result.to_dict()["data_config"]["input_size"] == [1, 224, 224]
        if embed:
            assert checks["real_images"].details.get("preprocessing") == "embedded"
        assert result.to_dict()["data_config"] == config and result.data_config_source == "override"
    assert resolve_data_config(model) == before  # the overrides went into the run, not onto the module
