"""preprocess() against timm's own eval transform: the whole zoo, odd images, configs from ONNX files."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from pytest_onnx_parity.testing import strategies as ops
from pytest_onnx_parity.onnxfile.metadata import DATA_CONFIG_KEY
from pytest_onnx_parity.errors import ImageError, MissingMetadataError, SpecError
from pytest_onnx_parity.preprocessing.transform import EvalTransform, preprocess

timm_data = pytest.importorskip("timm.data")

TOL = 1e-4
FIELDS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
HYPOTHESIS = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def timm_eval(image: Image.Image, config: dict) -> np.ndarray:
    """timm's eval pipeline: its loader's convert('RGB'), then create_transform."""
    transform = timm_data.create_transform(**{k: config[k] for k in FIELDS}, is_training=False)
    return transform(image.convert("RGB")).numpy()


def describe(config: dict) -> str:
    return ", ".join(f"{k}={tuple(config[k]) if isinstance(config[k], list) else config[k]}" for k in FIELDS)


def assert_matches_timm(image: Image.Image, config: dict, got: np.ndarray | None = None) -> None:
    expected = timm_eval(image, config)
    got = preprocess(image, config)[0] if got is None else got
    assert got.shape == expected.shape, f"shape {got.shape} != timm's {expected.shape} for {describe(config)}"
    diff = float(np.abs(got - expected).max())
    assert diff <= TOL, (
        f"max abs diff {diff:.3g} > {TOL} for a {image.mode} image of {image.size[0]}x{image.size[1]} "
        f"with {describe(config)}"
    )


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """One torch thread for this module (conftest.py); the photos are conftest's ``photo_paths``/``photos``."""


@pytest.fixture(scope="module")
def zoo_configs() -> list[dict]:
    """Every distinct data config among timm's pretrained configs."""
    import timm

    distinct: dict[tuple, dict] = {}
    for name in timm.list_pretrained():
        cfg = timm_data.resolve_data_config({}, pretrained_cfg=timm.models.get_pretrained_cfg(name).to_dict())
        key = (tuple(cfg["input_size"]), cfg["interpolation"], tuple(cfg["mean"]), tuple(cfg["std"]),
               cfg["crop_pct"], cfg["crop_mode"])
        distinct.setdefault(key, dict(cfg, example=name))
    return list(distinct.values())


@pytest.fixture(scope="module")
def vit_config() -> dict:
    return {"input_size": (3, 224, 224), "interpolation": "bicubic", "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5), "crop_pct": 0.9, "crop_mode": "center"}


# --- the zoo-wide proof ------------------------------------------------------------------------


def test_every_pretrained_data_config_of_timm_matches_on_real_photos(photos, photo_paths, zoo_configs):
    # The sweep must cover what the zoo has, or it proves nothing.
    assert len(zoo_configs) > 100
    assert {c["crop_mode"] for c in zoo_configs} == {"center", "squash", "border"}
    assert {c["interpolation"] for c in zoo_configs} >= {"bilinear", "bicubic"}
    assert any(c["input_size"][1] != c["input_size"][2] for c in zoo_configs)
    assert any(c["crop_pct"] > 1 for c in zoo_configs) and any(c["crop_pct"] == 1 for c in zoo_configs)

    arrays = [np.asarray(p) for p in photos]
    failures = []
    for cfg in zoo_configs:
        transform = timm_data.create_transform(**{k: cfg[k] for k in FIELDS}, is_training=False)
        expected = np.stack([transform(p).numpy() for p in photos])
        for kind, inputs in (("paths", photo_paths), ("PIL images", photos), ("arrays", arrays)):
            got = preprocess(inputs, cfg)
            if got.shape != expected.shape or got.dtype != np.float32:
                failures.append(f"{describe(cfg)} (e.g. {cfg['example']}), {kind}: {got.dtype}{got.shape}, "
                                f"timm gives float32{expected.shape}")
                continue
            diff = float(np.abs(got - expected).max())
            if diff > TOL:
                failures.append(f"{describe(cfg)} (e.g. {cfg['example']}), {kind}: max abs diff {diff:.3g}")
    assert not failures, f"{len(failures)} of {len(zoo_configs) * 3} config/input kinds differ from timm:\n" + "\n".join(failures[:25])


def test_original_size_photo_matches_timm_for_each_crop_mode_and_interpolation(photos):
    # Photos are downscaled, upscaled, padded: one config per mode x interpolation x aspect.
    image = photos[1]  # the cat, 384x255
    for crop_mode in ("center", "squash", "border"):
        for interpolation in ("bilinear", "bicubic", "nearest", "box", "hamming", "lanczos"):
            for size, crop_pct in (((3, 224, 224), 0.875), ((3, 160, 256), 1.0), ((3, 300, 200), 0.5), ((3, 96, 96), 1.15)):
                cfg = {"input_size": size, "interpolation": interpolation, "mean": (0.2, 0.4, 0.6),
                       "std": (0.3, 0.2, 0.1), "crop_pct": crop_pct, "crop_mode": crop_mode}
                assert_matches_timm(image, cfg)


# --- odd images -------------------------------------------------------------------------------


@pytest.mark.parametrize("crop_mode", ["center", "squash", "border"])
@pytest.mark.parametrize("width,height", [(1, 1), (1, 500), (500, 1), (7, 3), (3, 7), (2, 2)])
def test_odd_sizes_and_modes_match_timm(width, height, crop_mode):
    rng = np.random.default_rng(width * 1000 + height)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    images = {
        "RGB": Image.fromarray(rgb),
        "L": Image.fromarray(rgb[:, :, 0]),
        "RGBA": Image.fromarray(np.concatenate([rgb, rgb[:, :, :1]], axis=2)),
        "P": Image.fromarray(rgb).convert("P"),
        "CMYK": Image.fromarray(rgb).convert("CMYK"),
        "I;16": Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257),
    }
    cfg = {"input_size": (3, 24, 16), "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
           "std": (0.229, 0.224, 0.225), "crop_pct": 0.875, "crop_mode": crop_mode}
    for mode, image in images.items():
        assert image.mode == mode
        try:
            expected = timm_eval(image, cfg)
        except ValueError:  # border mode shrinks a 1x500 image to 0 pixels: timm fails, so must we
            with pytest.raises(ImageError, match="resizes to"):
                preprocess(image, cfg)
            continue
        got = preprocess(image, cfg)[0]
        diff = float(np.abs(got - expected).max())
        assert diff <= TOL, f"{mode} {width}x{height}, {crop_mode}: max abs diff {diff:.3g}"


@HYPOTHESIS
@given(image=ops.images(max_side=48), cfg=ops.data_configs(max_side=40, max_crop_pct=1.15))
def test_generated_images_match_timm(image, cfg):
    try:
        expected = timm_eval(image, cfg)
    except ValueError:  # border mode on a very thin image: timm fails, so must we
        with pytest.raises(ImageError, match="resizes to"):
            preprocess(image, cfg)
        return
    got = preprocess(image, cfg)[0]
    diff = float(np.abs(got - expected).max())
    assert diff <= TOL, f"{image.mode} {image.size}, {describe(cfg)}: max abs diff {diff:.3g}"


@HYPOTHESIS
@given(array=ops.image_arrays(min_side=2, max_side=48), cfg=ops.data_configs(max_side=40))
def test_generated_arrays_match_timm(array, cfg):
    try:
        expected = timm_eval(Image.fromarray(array), cfg)
    except ValueError:  # border mode on a very thin image: timm fails, so must we
        with pytest.raises(ImageError, match="resizes to"):
            preprocess(array, cfg)
        return
    got = preprocess([array, array], cfg)
    assert got.shape == (2,) + expected.shape
    assert float(np.abs(got - expected).max()) <= TOL, describe(cfg)


@settings(HYPOTHESIS, max_examples=25)
@given(image=ops.images(min_side=8, max_side=64, modes=("RGB",)), cfg=ops.pretrained_data_configs())
def test_generated_images_match_timm_for_pretrained_configs(image, cfg):
    assert_matches_timm(image, cfg)


@HYPOTHESIS
@given(cfg=ops.data_configs(max_side=32), data=st.data())
def test_batches_strategy_is_shaped_by_the_config(cfg, data):
    batch = data.draw(ops.batches(cfg, min_size=1, max_size=3))
    assert batch.dtype == np.float32
    assert batch.shape[1:] == tuple(cfg["input_size"]) and 1 <= batch.shape[0] <= 3
    lo = (0 - np.asarray(cfg["mean"])) / np.asarray(cfg["std"])
    hi = (1 - np.asarray(cfg["mean"])) / np.asarray(cfg["std"])
    assert np.all(batch >= lo[None, :, None, None] - 1e-5) and np.all(batch <= hi[None, :, None, None] + 1e-5)


# --- what it does not do, as timm does not -------------------------------------------------------


def test_exif_orientation_is_ignored_like_timm(tmp_path, photos, vit_config):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    photos[1].save(path, exif=exif, quality=95)
    got = preprocess(path, vit_config)[0]
    with Image.open(path) as raw:
        assert raw.getexif()[0x0112] == 6
        stored = raw.convert("RGB")
        transposed = ImageOps.exif_transpose(raw).convert("RGB")
    assert transposed.size != stored.size  # the EXIF really asks for a rotation
    assert float(np.abs(got - timm_eval(stored, vit_config)).max()) <= TOL
    assert float(np.abs(got - timm_eval(transposed, vit_config)).max()) > 0.5


def test_sixteen_bit_images_clip_like_timm(vit_config):
    image = Image.fromarray(np.full((40, 30), 4000, dtype=np.uint16))
    assert image.mode == "I;16"
    got = preprocess(image, vit_config)
    assert np.allclose(got, 1.0)  # 4000 clips to 255 -> (1 - 0.5) / 0.5
    assert_matches_timm(image, vit_config, got[0])


def test_no_torch_import(tmp_path, photo_paths):
    onnx_path = write_onnx(tmp_path / "m.onnx", {DATA_CONFIG_KEY: json.dumps(_six(VIT))})
    code = (
        "import sys\n"
        "from pytest_onnx_parity.preprocessing.transform import preprocess\n"
        "from pytest_onnx_parity.preprocessing.images import real_batch\n"
        f"batch = preprocess({[str(p) for p in photo_paths]!r}, {str(onnx_path)!r})\n"
        f"batch, paths = real_batch({str(onnx_path)!r})\n"
        "assert batch.shape == (4, 3, 224, 224), batch.shape\n"
        "heavy = sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# --- inputs and their errors -----------------------------------------------------------------------


def test_inputs_one_or_many(photos, photo_paths, vit_config):
    one = preprocess(photos[0], vit_config)
    assert one.shape == (1, 3, 224, 224) and one.dtype == np.float32
    assert np.array_equal(preprocess(str(photo_paths[0]), vit_config), one)
    assert np.array_equal(preprocess(np.asarray(photos[0]), vit_config), one)
    stacked = np.stack([np.asarray(photos[0])] * 2)  # NxHxWx3 is a batch
    assert np.array_equal(preprocess(stacked, vit_config), np.concatenate([one, one]))
    mixed = preprocess([photo_paths[0], photos[1], np.asarray(photos[2])], vit_config)
    assert np.array_equal(mixed, preprocess(photo_paths[:3], vit_config))
    assert np.array_equal(preprocess(photo_paths[0].parent, vit_config), preprocess(photo_paths, vit_config))


def test_bad_arrays_say_what_to_do(vit_config):
    with pytest.raises(ImageError, match="uint8"):
        preprocess(np.zeros((8, 8, 3), dtype=np.float32), vit_config)
    with pytest.raises(ImageError, match=r"transpose\(1, 2, 0\)"):
        preprocess(np.zeros((3, 8, 8), dtype=np.uint8)[None], vit_config)
    with pytest.raises(ImageError, match="cannot preprocess a int"):
        preprocess(42, vit_config)


def test_unreadable_files_are_all_listed(tmp_path, photo_paths, vit_config):
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not a JPEG")
    truncated = tmp_path / "truncated.png"
    Image.open(photo_paths[0]).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    missing = tmp_path / "missing.jpg"
    with pytest.raises(ImageError) as info:
        preprocess([photo_paths[0], garbage, truncated, missing], vit_config)
    message = str(info.value)
    assert message.startswith("3 images cannot be read")
    for path in (garbage, truncated, missing):
        assert str(path) in message
    assert str(photo_paths[0]) not in message
    assert "corrupt or truncated" in message and "no such file" in message and "Pillow can read" in message


def test_config_errors(vit_config):
    with pytest.raises(MissingMetadataError, match="lacks crop_pct, crop_mode"):
        preprocess(np.zeros((8, 8, 3), np.uint8), {k: vit_config[k] for k in FIELDS[:4]})
    with pytest.raises(SpecError, match="interpolation 'random'"):
        preprocess(np.zeros((8, 8, 3), np.uint8), dict(vit_config, interpolation="random"))
    with pytest.raises(SpecError, match="crop_mode 'middle'"):
        preprocess(np.zeros((8, 8, 3), np.uint8), dict(vit_config, crop_mode="middle"))
    with pytest.raises(SpecError, match="3-channel"):
        preprocess(np.zeros((8, 8, 3), np.uint8), dict(vit_config, input_size=(1, 224, 224)))


# --- configs from ONNX files and test-time settings --------------------------------------------------

VIT = {"input_size": [3, 224, 224], "interpolation": "bicubic", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
       "crop_pct": 0.9, "crop_mode": "center", "test_input_size": [3, 256, 192], "test_crop_pct": 1.0}


def _six(cfg: dict) -> dict:
    return {k: cfg[k] for k in FIELDS}


def write_onnx(path: Path, metadata: dict[str, str]) -> Path:
    """A one-node ONNX file carrying ``metadata``: no torch export needed."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, None, None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3, None, None])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, metadata)
    onnx.save(model, str(path))
    return path


def test_config_from_onnx_file_model_and_session(tmp_path, photos):
    import onnx
    import onnxruntime

    path = write_onnx(tmp_path / "vit.onnx", {DATA_CONFIG_KEY: json.dumps(VIT)})
    expected = preprocess(photos, _six(VIT))
    assert float(np.abs(expected[0] - timm_eval(photos[0], VIT)).max()) <= TOL
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for config in (path, str(path), onnx.load(str(path)), session):
        got = preprocess(photos, config)
        assert np.array_equal(got, expected), type(config).__name__
    # the session runs what preprocess made
    assert np.array_equal(session.run(None, {"x": expected})[0], expected)
    # the defaults a hand-written pipeline assumes give other pixels: the seed failure
    imagenet = dict(_six(VIT), mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], crop_pct=0.875,
                    interpolation="bilinear")
    assert float(np.abs(preprocess(photos, imagenet) - expected).max()) > 0.5


def test_test_time_settings(tmp_path, photos):
    path = write_onnx(tmp_path / "vit.onnx", {DATA_CONFIG_KEY: json.dumps(VIT)})
    pretrained_cfg = dict(VIT, input_size=tuple(VIT["input_size"]), test_input_size=tuple(VIT["test_input_size"]))
    expected_cfg = timm_data.resolve_data_config({}, pretrained_cfg=pretrained_cfg, use_test_size=True)
    assert tuple(expected_cfg["input_size"]) == (3, 256, 192) and expected_cfg["crop_pct"] == 1.0
    for config in (VIT, path):
        got = preprocess(photos[0], config, test_time=True)
        assert got.shape == (1, 3, 256, 192)
        assert_matches_timm(photos[0], expected_cfg, got[0])
        assert preprocess(photos[0], config).shape == (1, 3, 224, 224)  # eval size unless asked


def test_test_time_settings_of_a_timm_model(photos):
    import timm

    name = "convnext_atto.d2_in1k"
    pretrained_cfg = timm.models.get_pretrained_cfg(name).to_dict()
    assert pretrained_cfg["test_input_size"] != pretrained_cfg["input_size"]
    config = dict(timm_data.resolve_data_config({}, pretrained_cfg=pretrained_cfg),
                  test_input_size=pretrained_cfg["test_input_size"], test_crop_pct=pretrained_cfg["test_crop_pct"])
    expected_cfg = timm_data.resolve_data_config({}, pretrained_cfg=pretrained_cfg, use_test_size=True)
    got = preprocess(photos[2], config, test_time=True)[0]
    assert_matches_timm(photos[2], expected_cfg, got)


def test_missing_metadata(tmp_path):
    path = write_onnx(tmp_path / "bare.onnx", {"producer": "someone else"})
    with pytest.raises(MissingMetadataError, match=DATA_CONFIG_KEY):
        preprocess(np.zeros((8, 8, 3), np.uint8), path)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with pytest.raises(MissingMetadataError, match=DATA_CONFIG_KEY):
        preprocess(np.zeros((8, 8, 3), np.uint8), session)


def test_eval_transform_exposes_timm_sizes():
    t = EvalTransform.from_config({"input_size": (3, 224, 224), "interpolation": "bilinear", "mean": (0.5,),
                                   "std": (0.5,), "crop_pct": 0.875, "crop_mode": "center"})
    assert t.scale_size == (256, 256)
    assert t.resized_size(640, 427) == (383, 256)  # int(256 * 640 / 427) = 383, truncated
    assert t.mean == (0.5, 0.5, 0.5)
    border = EvalTransform.from_config({"input_size": (3, 224, 224), "interpolation": "bilinear",
                                        "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
                                        "crop_pct": 1.0, "crop_mode": "border"})
    assert border.resized_size(640, 427) == (224, 149) and border.fill == (124, 116, 104)


def test_package_level_preprocess_is_callable_after_the_submodule_is_imported(photos, vit_config):
    # The submodule is `preprocessing`, so importing it does not rebind the package's
    # `preprocess` attribute: `from pytest_onnx_parity import preprocess` is the function.
    import pytest_onnx_parity
    from pytest_onnx_parity import preprocess as public

    assert public is pytest_onnx_parity.preprocess is preprocess
    assert np.array_equal(public(photos[:2], vit_config), preprocess(photos[:2], vit_config))
    assert np.array_equal(public(photos[:1], VIT, test_time=True), preprocess(photos[:1], VIT, test_time=True))
