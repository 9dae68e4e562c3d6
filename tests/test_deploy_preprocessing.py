"""The deployment's own preprocessing (--onnx-parity-preprocess): run, compared with timm's, diagnosed, judged.

The pipelines are hand-written in tests/deploy/pipelines.py (Pillow, numpy, OpenCV) and tests/deploy/preprocess.js
(plain Node); each planted difference must be found under its own field.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from pytest_onnx_parity import PreprocessError, SpecError, compare_preprocessing
from pytest_onnx_parity.preprocessing.dataconfig import resolve_data_config
from pytest_onnx_parity.preprocessing.deploy import open_preprocessor, parse_preprocess
from pytest_onnx_parity.preprocessing.images import bundled_image_paths
from pytest_onnx_parity.preprocessing.transform import preprocess

DEPLOY = Path(__file__).parent / "deploy"
PIPELINES = DEPLOY / "pipelines.py"
VIT = "vit_small_patch16_224.augreg_in21k_ft_in1k"  # mean = std = 0.5, bicubic, crop_pct 0.9: no weights needed


@pytest.fixture(scope="module")
def cfg() -> dict[str, Any]:
    return resolve_data_config(VIT)


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    return bundled_image_paths()


def run_pipeline(name: str, photos: list[Path], cfg: dict[str, Any]) -> tuple[Any, Any]:
    pre = open_preprocessor(f"{PIPELINES}:{name}")
    return pre, compare_preprocessing(pre(photos, cfg), photos, cfg)


def fields(comp: Any) -> set[str]:
    return {f.field for f in comp.diagnosis}


# ------------------------------------------------------------------------------------------------ the SPEC
@pytest.mark.parametrize("text, kind", [("metadata", "metadata"), ("", "metadata"), ("canvas", "canvas"),
                                        ("canvas(colorSpaceConversion=none, crop=center)", "canvas"),
                                        ("command:node p.js {images} {output}", "command"),
                                        ("tensors:out/tensors", "tensors"), ("my.pkg.prep:run", "module"),
                                        ("deploy/prep.py:run", "module")])
def test_specs_parse(text: str, kind: str) -> None:
    spec = parse_preprocess(text)
    assert spec.kind == kind
    if text.startswith("canvas("):
        assert spec.options == {"colorSpaceConversion": "none", "crop": "center"}


@pytest.mark.parametrize("text, words", [("command:node p.js {images}", "{output}"), ("tensors:", "name the folder"),
                                         ("nocolon", "module:function"), ("mod:not-a-name", "module:function"),
                                         ("canvas(nokey)", "key=value"), ("a b:c", "neither a dotted")])
def test_a_bad_spec_is_a_usage_error_naming_the_forms(text: str, words: str) -> None:
    with pytest.raises(SpecError, match=words.replace("{", r"\{").replace("}", r"\}")):
        parse_preprocess(text)


def test_a_missing_module_or_function_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no module 'no_such_prep_module'"):
        open_preprocessor("no_such_prep_module:run", rootdir=tmp_path)
    with pytest.raises(SpecError, match="has no function 'nope'.*faithful"):
        open_preprocessor(f"{PIPELINES}:nope")
    with pytest.raises(SpecError, match="no file"):
        open_preprocessor("missing.py:run", rootdir=tmp_path)


def test_a_dotted_module_is_imported_from_the_rootdir(photos: list[Path], cfg: dict[str, Any]) -> None:
    pre = open_preprocessor("pipelines:faithful", rootdir=DEPLOY)
    assert pre(photos[:2], cfg).shape == (2, 3, 224, 224)


@pytest.mark.parametrize("name, words", [("wrong_shape", r"shape \(2, 3, 10\) for 2 photo"),
                                         ("as_uint8", "uint8 values.*divide by 255"),
                                         ("fails", "RuntimeError: model server config not found")])
def test_a_bad_preprocessor_output_is_an_error_naming_the_fix(name: str, words: str, photos: list[Path],
                                                              cfg: dict[str, Any]) -> None:
    pre = open_preprocessor(f"{PIPELINES}:{name}")
    with pytest.raises(PreprocessError, match=words):
        pre(photos[:2], cfg)


def test_a_failing_command_shows_its_stderr(photos: list[Path], cfg: dict[str, Any]) -> None:
    cmd = (f"command:{sys.executable} -c \"import sys; sys.stderr.write('decoder exploded on frame 3'); sys.exit(3)\""
           " {images} {output}")
    with pytest.raises(PreprocessError, match=r"(?s)exit status 3.*decoder exploded on frame 3"):
        open_preprocessor(cmd)(photos, cfg)
    with pytest.raises(PreprocessError, match="wrote no {output}"):
        open_preprocessor(f"command:{sys.executable} -c pass {{images}} {{output}}")(photos, cfg)


# ------------------------------------------------------------------------------------------ the comparison
def test_a_faithful_pipeline_equals_timm(photos: list[Path], cfg: dict[str, Any]) -> None:
    pre, comp = run_pipeline("faithful", photos, cfg)
    assert comp.equal and comp.passed and comp.diagnosis == []
    assert comp.max_abs_diff < 1e-6 and pre.layout_seen == "NCHW"
    assert len(comp.per_photo) == 4 and comp.per_photo[0]["photo"] == photos[0].name


def test_nhwc_output_is_read_as_nhwc_and_float64_is_cast(photos: list[Path], cfg: dict[str, Any]) -> None:
    pre, comp = run_pipeline("faithful_nhwc", photos, cfg)
    assert pre.layout_seen == "NHWC" and comp.equal
    pre, comp = run_pipeline("faithful_float64", photos, cfg)
    assert comp.equal


@pytest.mark.parametrize("name, expected, kind", [
    ("bgr", {"channel_order"}, "data_config"),
    ("imagenet_mean", {"mean_std"}, "data_config"),
    ("squash", {"crop_mode", "crop_pct"}, "data_config"),
    ("scale_255", {"scale"}, "data_config"),
    ("nhwc_reshaped", {"layout"}, "data_config"),
    ("crop_875", {"crop_pct"}, "data_config"),
    ("cv2_linear", {"library"}, "library"),
    ("cv2_area", {"library"}, "library"),
])
def test_each_planted_difference_is_diagnosed(name: str, expected: set[str], kind: str, photos: list[Path],
                                              cfg: dict[str, Any]) -> None:
    pytest.importorskip("cv2")
    _, comp = run_pipeline(name, photos, cfg)
    assert not comp.equal
    assert fields(comp) == expected, comp.message
    assert {f.kind for f in comp.diagnosis} == {kind}
    assert comp.closest["explains"] > 0.99 and comp.closest["residual_max_levels"] < 1.0
    assert comp.passed is (kind == "library")  # a library difference is judged by its effect, later


def test_the_diagnosis_speaks_the_data_configs_words(photos: list[Path], cfg: dict[str, Any]) -> None:
    _, comp = run_pipeline("imagenet_mean", photos, cfg)
    assert "mean = (0.485, 0.456, 0.406), std = (0.229, 0.224, 0.225) (ImageNet's defaults)" in comp.message
    assert "the model was trained with mean = std = 0.5" in comp.message
    _, comp = run_pipeline("cv2_linear", photos, cfg)
    assert "OpenCV cv2.resize INTER_LINEAR" in comp.message


def test_the_seeds_opencv_service_is_taken_apart(photos: list[Path], cfg: dict[str, Any]) -> None:
    pytest.importorskip("cv2")
    _, comp = run_pipeline("opencv_service", photos, cfg)
    assert {"channel_order", "crop_mode", "mean_std", "library"} <= fields(comp), comp.message
    assert comp.closest["explains"] > 0.99 and not comp.passed


def test_interpolation_grayscale_and_exif_are_found(tmp_path: Path, photos: list[Path], cfg: dict[str, Any]) -> None:
    imgs = [Image.open(p).convert("RGB") for p in photos]
    bilinear = preprocess(imgs, {**cfg, "interpolation": "bilinear"})
    assert fields(compare_preprocessing(bilinear, photos, cfg)) == {"interpolation"}
    gray = preprocess([im.convert("L").convert("RGB") for im in imgs], cfg)
    assert fields(compare_preprocessing(gray, photos, cfg)) == {"grayscale"}
    rotated = tmp_path / "rotated.jpg"  # EXIF says "rotate 90" (orientation 6): timm ignores it
    exif = Image.Exif()
    exif[0x0112] = 6
    imgs[1].save(rotated, exif=exif, quality=95)
    upright = preprocess([ImageOps.exif_transpose(Image.open(rotated))], cfg)
    comp = compare_preprocessing(upright, [rotated], cfg)
    assert fields(comp) == {"exif"} and comp.diagnosis[0].kind == "library"


def test_constants_of_your_own_are_fitted_and_named(photos: list[Path], cfg: dict[str, Any]) -> None:
    own = preprocess(photos, {**cfg, "mean": [0.48, 0.45, 0.4], "std": [0.23, 0.22, 0.21], "crop_mode": "squash"})
    comp = compare_preprocessing(own, photos, cfg)
    assert fields(comp) == {"mean_std", "crop_mode"} and comp.closest["residual_max_levels"] < 0.01
    assert "mean = (0.48, 0.45, 0.4), std = (0.23, 0.22, 0.21)" in comp.message
    assert abs(sum(f.explains for f in comp.diagnosis) - 1.0) < 0.05  # two fields: the shares add up


def test_another_input_size_is_a_size_finding_not_a_crash(photos: list[Path], cfg: dict[str, Any]) -> None:
    big = preprocess(photos, {**cfg, "input_size": [3, 256, 256]})
    comp = compare_preprocessing(big, photos, cfg)
    assert not comp.passed and comp.max_abs_diff is None
    assert comp.diagnosis[0].field == "input_size" and "256" in comp.diagnosis[0].yours


# -------------------------------------------------------------------------------- commands and saved tensors
@pytest.mark.parametrize("name", ["faithful", "bgr"])
def test_a_command_gets_the_callables_verdict(name: str, photos: list[Path], cfg: dict[str, Any]) -> None:
    pytest.importorskip("cv2")
    _, by_callable = run_pipeline(name, photos, cfg)
    pre = open_preprocessor(f"command:{sys.executable} {DEPLOY / 'prep_cli.py'} {{images}} {{output}} {{config}} {name}")
    by_command = compare_preprocessing(pre(photos, cfg), photos, cfg)
    assert by_command.passed == by_callable.passed and fields(by_command) == fields(by_callable)
    assert by_command.max_abs_diff == by_callable.max_abs_diff


@pytest.fixture(scope="module")
def ppm_photos(photos: list[Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The bundled photos decoded once to PPM, the format the Node script reads without packages."""
    folder = tmp_path_factory.mktemp("ppm")
    out = []
    for p in photos:
        Image.open(p).convert("RGB").save(folder / f"{p.stem}.ppm")
        out.append(folder / f"{p.stem}.ppm")
    return out


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_a_node_preprocessing_command(ppm_photos: list[Path], cfg: dict[str, Any]) -> None:
    node = f"command:node {DEPLOY / 'preprocess.js'} {{images}} {{output}} {{config}}"
    comp = compare_preprocessing(open_preprocessor(node)(ppm_photos, cfg), ppm_photos, cfg)
    assert comp.equal, comp.message  # a float re-implementation of Pillow's filter: within one 8-bit level
    assert comp.max_levels <= 2.01
    comp = compare_preprocessing(open_preprocessor(node + " --bgr")(ppm_photos, cfg), ppm_photos, cfg)
    assert fields(comp) == {"channel_order"} and not comp.passed


def test_saved_tensors_are_read_by_stem_and_a_missing_one_is_named(tmp_path: Path, photos: list[Path],
                                                                   cfg: dict[str, Any]) -> None:
    tensors = open_preprocessor(f"{PIPELINES}:imagenet_mean")(photos, cfg)
    for p, t in zip(photos, tensors):
        np.save(tmp_path / f"{p.stem}.npy", t.transpose(1, 2, 0))  # a mobile app saving HWC
    pre = open_preprocessor(f"tensors:{tmp_path}")
    comp = compare_preprocessing(pre(photos, cfg), photos, cfg)
    assert pre.layout_seen == "NHWC" and fields(comp) == {"mean_std"}
    (tmp_path / f"{photos[1].stem}.npy").unlink()
    with pytest.raises(PreprocessError, match=rf"{photos[1].name} -> .*{photos[1].stem}\.npy"):
        pre(photos, cfg)


def test_no_torch_where_a_deployment_runs() -> None:
    code = ("import sys; import pytest_onnx_parity.preprocessing.deploy, pytest_onnx_parity.preprocessing.diagnose; "
            "assert 'torch' not in sys.modules and 'timm' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------ the check, through a file
@pytest.fixture(scope="module")
def vit_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    from pytest_onnx_parity import export_onnx, load_model

    export = export_onnx("test_vit", exporter="torchscript", cache_dir=str(tmp_path_factory.mktemp("cache")))
    return load_model("test_vit"), export


def run_check(vit_file: tuple[Any, Any], spec: str, plots: Path | None = None) -> Any:
    from pytest_onnx_parity.checks.context import CheckContext
    from pytest_onnx_parity.checks.preprocessing import check
    from pytest_onnx_parity.options import ParityOptions
    from pytest_onnx_parity.runtime.runner import open_runner
    from pytest_onnx_parity.model.build import record_of

    model, export = vit_file
    options = ParityOptions()
    options.preprocess = spec  # type: ignore[attr-defined]
    options.plots = str(plots) if plots else None  # type: ignore[attr-defined]
    runner = open_runner(export.path)
    ctx = CheckContext(model=model, record=record_of(model), export=export, options=options,
                       session_factory=lambda: runner, model_label="test_vit")
    return check(ctx)


def test_the_check_passes_a_faithful_pipeline_and_fails_bgr_whatever_the_logits(vit_file: tuple[Any, Any],
                                                                                tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    result = run_check(vit_file, f"{PIPELINES}:faithful")
    assert result.status == "passed", result.message
    assert result.details["effect"]["top1_agreement"] == 1.0 and result.details["effect"]["logit_max_diff"] < 1e-5
    result = run_check(vit_file, f"{PIPELINES}:bgr", plots=tmp_path)
    assert result.status == "failed" and "channel_order" in result.message
    assert [f["field"] for f in result.details["diagnosis"]] == ["channel_order"]
    assert result.details["layout"] == "NCHW" and len(result.details["per_photo"]) == 4
    if result.details.get("plot"):
        assert Path(result.details["plot"]).stat().st_size > 0
    else:
        pytest.importorskip("matplotlib") and pytest.fail("matplotlib is installed but no heat map was written")


def test_a_library_difference_fails_only_through_its_effect(vit_file: tuple[Any, Any]) -> None:
    pytest.importorskip("cv2")
    result = run_check(vit_file, f"{PIPELINES}:cv2_linear")
    effect, limits = result.details["effect"], result.details["thresholds"]
    assert [f["kind"] for f in result.details["diagnosis"]] == ["library"]
    too_big = (effect["logit_max_diff_x_rms"] > limits["max_logit_effect"]
               or effect["top1_agreement"] < limits["min_top1_agreement"])
    assert result.status == ("failed" if too_big else "passed"), result.message


def test_a_bad_spec_or_failing_preprocessor_is_an_error_entry(vit_file: tuple[Any, Any]) -> None:
    result = run_check(vit_file, "no_such_prep_module:run")
    assert result.status == "error" and "no module" in result.message
    result = run_check(vit_file, f"{PIPELINES}:fails")
    assert result.status == "error" and "model server config not found" in result.message
    assert run_check(vit_file, "metadata").status == "skipped"


def test_a_colour_profile_conversion_is_found_on_the_photo_that_carries_one() -> None:
    """rocket.jpg carries an Adobe RGB profile; a deployment that converts it to sRGB (as a browser does) differs from
    timm (which ignores it), and the diagnosis searches that photo too and names colour_profile."""
    import io

    from PIL import Image, ImageCms

    from pytest_onnx_parity.preprocessing.dataconfig import resolve_data_config
    from pytest_onnx_parity.preprocessing.diagnose import compare_preprocessing
    from pytest_onnx_parity.preprocessing.images import bundled_image_paths
    from pytest_onnx_parity.preprocessing.transform import preprocess

    cfg = resolve_data_config("vit_small_patch16_224.augreg_in21k_ft_in1k")
    paths = bundled_image_paths()

    def converted(path):  # type: ignore[no-untyped-def]
        im = Image.open(path)
        icc = im.info.get("icc_profile")
        if not icc:
            return im.convert("RGB")
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(im.convert("RGB"), src, ImageCms.createProfile("sRGB"), outputMode="RGB")

    yours = preprocess([converted(p) for p in paths], cfg)
    comp = compare_preprocessing(yours, paths, cfg)
    assert not comp.equal
    assert [f.field for f in comp.diagnosis] == ["colour_profile"], comp.message
    assert comp.diagnosis[0].kind == "library"
