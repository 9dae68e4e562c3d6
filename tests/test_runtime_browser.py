"""onnxruntime-web in headless Chromium (WASM and WebGPU) and the canvas preprocessor, against Python's
onnxruntime and Pillow. Skipped where Chromium, Node.js or the npm packages are missing, failed instead
when the CI environment variable is set."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pytest_onnx_parity.errors import OnnxFileError, SpecError
from pytest_onnx_parity.runtime.runner import RunSettings, open_runner, runtime_missing

PHOTOS = Path(__file__).resolve().parents[1] / "pytest_onnx_parity" / "data" / "images"
WASM, WEBGPU = "onnxruntime-web-browser", "onnxruntime-web-webgpu"
#: the agreement a float32 file needs with Python's onnxruntime (x the output's RMS)
FP32_RTOL = 1e-5


def _require_browser() -> None:
    try:
        from pytest_onnx_parity.testing.runtimes import require_runtime
    except ImportError:  # the shared rule, where this build lacks it: skip, or fail on CI
        from pytest_onnx_parity.runtime.browserhost import browser_missing

        why = browser_missing()
        if why and os.environ.get("CI"):
            pytest.fail(f"CI is set and the browser runtimes cannot run: {why}")
        if why:
            pytest.skip(why)
        return
    require_runtime(WASM)


@pytest.fixture(scope="module")
def browser() -> None:
    _require_browser()


def _tiny_model(path: Path, dtype: str = "float32") -> Path:
    """Conv 3->8, Relu, global average pool, Gemm 8->5: float32, or float16 throughout (inputs too)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    np_type = np.dtype(dtype)
    elem = TensorProto.FLOAT if dtype == "float32" else TensorProto.FLOAT16
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np_type) * np_type.type(0.3), name)
             for name, shape in (("w", (8, 3, 3, 3)), ("b", (8,)), ("fc", (5, 8)), ("fcb", (5,)))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1],
                              kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", elem, ["n", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", elem, ["n", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_model(tmp_path_factory.mktemp("browser") / "tiny.onnx")


@pytest.fixture(scope="module")
def tiny16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_model(tmp_path_factory.mktemp("browser16") / "tiny16.onnx", "float16")


def _batch(dtype: str = "float32") -> np.ndarray:
    return np.random.default_rng(1).standard_normal((4, 3, 16, 16)).astype(dtype)


def _python_ort(path: Path, x: np.ndarray) -> np.ndarray:
    return open_runner(path).run(None, {"x": x})[0]


def _rel(actual: np.ndarray, expected: np.ndarray) -> float:
    expected = expected.astype(np.float64)
    return float(np.abs(actual.astype(np.float64) - expected).max() / np.sqrt(np.mean(expected ** 2)))


def _webgpu_ready() -> None:
    """WebGPU needs an adapter as well: a Chromium without one skips these tests (also on CI: a software
    adapter is not on every machine)."""
    why = runtime_missing(RunSettings(runtime=WEBGPU))
    if why:
        pytest.skip(why)


# -- WASM in a page ----------------------------------------------------------------------------------------------
def test_wasm_in_chromium_agrees_with_python_onnxruntime(browser: None, tiny: Path) -> None:
    x = _batch()
    runner = open_runner(tiny, RunSettings(runtime=WASM))
    try:
        (got,) = runner.run(["y"], {"x": x})
        assert got.dtype == np.float32 and got.shape == (4, 5)
        assert _rel(got, _python_ort(tiny, x)) <= FP32_RTOL
        assert [(t.name, t.type) for t in runner.get_inputs()] == [("x", "tensor(float)")]
        assert runner.get_inputs()[0].shape[1:] == [3, 16, 16]
        assert [(t.name, t.type) for t in runner.get_outputs()] == [("y", "tensor(float)")]
        info = runner.info()
        assert info.runtime == WASM and info.backend == "wasm"
        assert info.versions["onnxruntime-web"] == "1.31.1"
        assert info.versions["chromium"].startswith(("Chrome/", "HeadlessChrome/"))
        assert info.threads and info.threads >= 1
    finally:
        runner.close()


def test_a_float16_file_gives_float16_outputs(browser: None, tiny16: Path) -> None:
    x = _batch("float16")
    runner = open_runner(tiny16, RunSettings(runtime=WASM))
    try:
        (got,) = runner.run(None, {"x": x})
    finally:
        runner.close()
    assert got.dtype == np.float16
    assert _rel(got, _python_ort(tiny16, x)) <= 1e-2


def test_external_data_and_integer_outputs(browser: None, tiny: Path, tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(tiny))
    model.graph.node.append(helper.make_node("ArgMax", ["y"], ["k"], axis=1, keepdims=0))
    model.graph.output.append(helper.make_tensor_value_info("k", TensorProto.INT64, ["n"]))
    path = tmp_path / "split" / "tiny_ext.onnx"
    (path.parent / "weights").mkdir(parents=True)
    onnx.save(model, str(path), save_as_external_data=True, location="weights/tiny.bin", size_threshold=0)
    assert (path.parent / "weights" / "tiny.bin").is_file()
    x = _batch()
    runner = open_runner(path, RunSettings(runtime=WASM))
    try:
        y, k = runner.run(["y", "k"], {"x": x})
        assert runner.get_outputs()[1].type == "tensor(int64)"
    finally:
        runner.close()
    ref_y, ref_k = open_runner(path).run(["y", "k"], {"x": x})
    assert k.dtype == np.int64
    np.testing.assert_array_equal(k, ref_k)
    assert _rel(y, ref_y) <= FP32_RTOL


def test_thread_option_and_one_chromium_across_runners(browser: None, tiny: Path) -> None:
    from pytest_onnx_parity.runtime.browserhost import get_host

    first = open_runner(tiny, RunSettings(runtime=WASM))
    pid = get_host().proc.pid
    second = open_runner(tiny, RunSettings(runtime=f"{WASM}(numThreads=1)"))
    try:
        assert get_host().proc.pid == pid  # one Node.js host, one Chromium, two sessions
        assert second.info().threads == 1
        x = _batch()
        np.testing.assert_array_equal(first.run(None, {"x": x})[0], first.run(None, {"x": x})[0])
        assert _rel(second.run(None, {"x": x})[0], first.run(None, {"x": x})[0]) <= FP32_RTOL
    finally:
        first.close()
        second.close()
    assert get_host().proc.pid == pid


def test_errors_come_back_as_messages_and_a_dead_host_is_restarted(browser: None, tiny: Path, tmp_path: Path) -> None:
    import onnx

    from pytest_onnx_parity.runtime.browserhost import get_host

    model = onnx.load(str(tiny))
    model.graph.node[1].op_type = "NoSuchOp"  # a valid file onnxruntime-web cannot load
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(OnnxFileError, match="cannot load bad.onnx: .*NoSuchOp"):
        open_runner(bad, RunSettings(runtime=WASM))
    runner = open_runner(tiny, RunSettings(runtime=WASM))
    with pytest.raises(OnnxFileError, match="failed to run"):
        runner.run(None, {"nope": _batch()})
    assert runner.run(None, {"x": _batch()})[0].shape == (4, 5)  # the page still serves
    with pytest.raises(OnnxFileError, match=r"took over 0.001 s"):  # a time limit gives an error, never a hang
        open_runner(tiny, RunSettings(runtime=f"{WASM}(numThreads=1,timeout_s=0.001)"))
    old = get_host()
    old.proc.kill()  # the host this test process started
    old.proc.wait()
    x = _batch()
    again = open_runner(tiny, RunSettings(runtime=WASM))
    try:
        assert get_host() is not old and get_host().alive()
        expected = again.run(None, {"x": x})[0]
        np.testing.assert_array_equal(runner.run(None, {"x": x})[0], expected)  # loaded again in the new host
    finally:
        again.close()
        runner.close()
    with pytest.raises(OnnxFileError, match="closed"):
        runner.run(None, {"x": x})
    with pytest.raises(SpecError, match="unknown option.*numThread"):
        open_runner(tiny, RunSettings(runtime=f"{WASM}(numThread=1)"))


def test_missing_chromium_names_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pytest_onnx_parity.runtime.browserhost import browser_missing

    monkeypatch.setenv("ONNX_PARITY_CHROMIUM", str(tmp_path / "no-such-chromium"))
    why = browser_missing()
    assert why is not None
    if "node not on PATH" not in why:
        assert why.startswith("Chromium is not installed")
        assert "onnx-parity runtimes --install onnxruntime-web-browser" in why


# -- WebGPU ------------------------------------------------------------------------------------------------------
def test_webgpu_float32_agrees_and_reports_its_adapter(browser: None, tiny: Path) -> None:
    _webgpu_ready()
    x = _batch()
    runner = open_runner(tiny, RunSettings(runtime=WEBGPU))
    try:
        (got,) = runner.run(None, {"x": x})
        info = runner.info()
    finally:
        runner.close()
    assert _rel(got, _python_ort(tiny, x)) <= FP32_RTOL
    assert info.backend == "webgpu" and info.providers == ["webgpu"]
    assert isinstance(info.extra["adapter"], dict) and info.extra["adapter"].get("vendor") is not None
    assert isinstance(info.extra["features"], list) and info.extra["features"]
    assert info.precision_reason == ""  # a float32 file needs no feature


def test_webgpu_float16_without_shader_f16_is_named(browser: None, tiny16: Path) -> None:
    """The WebGPU bundle refuses the file; the default bundle's WebGPU (JSEP) returns zeros without an error:
    either way the missing feature is named. An adapter with shader-f16 must agree instead."""
    _webgpu_ready()
    x = _batch("float16")
    expected = _python_ort(tiny16, x)
    jsep = f"{WEBGPU}(bundle=ort.bundle.min.mjs)"
    runner = open_runner(tiny16, RunSettings(runtime=jsep))
    try:
        (got,) = runner.run(None, {"x": x})
        info = runner.info()
    finally:
        runner.close()
    if "shader-f16" in info.extra["features"]:
        assert _rel(got, expected) <= 1e-2
        return
    assert np.std(expected) > 0 and not np.any(got)  # all zero where onnxruntime's vary
    assert "no shader-f16 feature" in info.precision_reason and "float16" in info.precision_reason
    assert info.extra["missing_features"] == ["shader-f16"]
    with pytest.raises(OnnxFileError, match="shader-f16"):
        open_runner(tiny16, RunSettings(runtime=WEBGPU))


# -- the canvas preprocessor -------------------------------------------------------------------------------------
CONFIG = {"input_size": (3, 224, 224), "interpolation": "bilinear", "mean": (0.485, 0.456, 0.406),
          "std": (0.229, 0.224, 0.225), "crop_pct": 0.875, "crop_mode": "center"}


def _levels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A normalised difference in 0..255 levels."""
    return np.abs(a - b) * np.asarray(CONFIG["std"], dtype=np.float32)[:, None, None] * 255


def test_canvas_decode_without_colour_conversion_is_pillows(browser: None) -> None:
    from PIL import Image

    from pytest_onnx_parity.preprocessing.canvas import canvas_pixels

    photos = sorted(PHOTOS.glob("*.jpg"))
    assert len(photos) >= 4
    plain = canvas_pixels(photos, {"colorSpaceConversion": "none"})
    managed = canvas_pixels(photos, {})
    for path, raw, conv in zip(photos, plain, managed):
        with Image.open(path) as im:
            pil = np.asarray(im.convert("RGB"))
            profile = im.info.get("icc_profile") is not None
        np.testing.assert_array_equal(raw, pil, err_msg=path.name)
        diff = np.abs(conv.astype(int) - pil.astype(int))
        if profile:  # rocket.jpg's Adobe RGB profile: the browser converts to sRGB
            assert diff.max() >= 20 and diff.mean() >= 2, path.name
        else:
            assert diff.max() == 0, path.name


def test_canvas_against_timms_transform(browser: None, tiny: Path) -> None:
    from pytest_onnx_parity.preprocessing.canvas import canvas_preprocess
    from pytest_onnx_parity.preprocessing.transform import preprocess
    from pytest_onnx_parity.runtime.browserhost import get_host

    runner = open_runner(tiny, RunSettings(runtime=WASM))
    pid = get_host().proc.pid

    rocket = [PHOTOS / "rocket.jpg"]
    expected = preprocess(rocket, CONFIG)[0]
    managed = canvas_preprocess(rocket, CONFIG, {"crop": "center"})
    plain = canvas_preprocess(rocket, CONFIG, {"crop": "center", "colorSpaceConversion": "none"})
    squash = canvas_preprocess(rocket, CONFIG, {})
    assert get_host().proc.pid == pid  # the runners' Chromium
    runner.close()
    assert managed.shape == plain.shape == squash.shape == (1, 3, 224, 224)
    assert managed.dtype == np.float32
    off, off_plain = _levels(managed[0], expected), _levels(plain[0], expected)
    assert off.mean() >= 3 and off.max() >= 40  # the colour profile: measured 5.8 and 89 levels
    assert off_plain.mean() < off.mean() / 2  # without the conversion only the resampling differs
    assert off_plain.mean() <= 2
    # the default draws the whole photo to 224x224: another geometry than timm's centre crop
    assert _levels(squash[0], expected).mean() > off.mean()


def test_canvas_options_are_checked() -> None:
    from pytest_onnx_parity.preprocessing.canvas import canvas_options

    assert canvas_options({}) == {"colorSpaceConversion": "default", "crop": "none", "quality": "low"}
    with pytest.raises(SpecError, match="colorSpaceConversion"):
        canvas_options({"colorspace": "none"})
    with pytest.raises(SpecError, match="center"):
        canvas_options({"crop": "middle"})
