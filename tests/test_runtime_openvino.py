"""The ``openvino`` runtime judged by what actually ran (runtime/openvino.py, checks/runtime_precision.py), and the
Python onnxruntime runner on GPU providers through provider options.

Every test that runs OpenVINO skips where it is not installed, and fails on CI (``testing.runtimes``). The
precision tests hold on both kinds of CPU: with AVX512_BF16 or AMX, OpenVINO's default is bf16 and must be named;
without them (AVX2) its default is float32 and nothing may be named.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from pytest_onnx_parity.checks.runtime_precision import effective_profile, precision_mismatch
from pytest_onnx_parity.errors import OnnxFileError, OnnxParityError, SpecError, VariantSkip
from pytest_onnx_parity.runtime.environment import probe_cpu
from pytest_onnx_parity.runtime.openvino import (
    EXT_DIR_KEY,
    MISSING,
    OpenVinoRunner,
    compile_config,
    declared_precision,
    effective_precision,
)
from pytest_onnx_parity.runtime.runner import RunSettings, RuntimeInfo, open_runner, runtime_missing

F32 = RunSettings(runtime="openvino(INFERENCE_PRECISION_HINT=f32)")
BF16 = RunSettings(runtime="openvino(INFERENCE_PRECISION_HINT=bf16)")
DEFAULT = RunSettings(runtime="openvino")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
#: a module of resnet18 whose weights a 5% fault scales (benchmarks/bf16_tolerances.py plants it there too)
FAULT_LAYER = "layer2.1.conv1"


def cpu_default() -> tuple[str, str | None]:
    """The precision OpenVINO's CPU plugin defaults to here and the CPU feature that makes it so: bf16 on x86 with
    AVX512_BF16 or AMX, fp16 on ARM with float16 arithmetic, else float32 (no feature)."""
    _, machine, flags = probe_cpu()
    bf16 = next((f for f in BF16_FLAGS if f in flags), None)
    if bf16:
        return "bf16", bf16
    fp16 = next((f for f in ("fphp", "asimdhp") if f in flags), None)
    if fp16 and machine.lower() in ("aarch64", "arm64"):
        return "fp16", fp16
    return "fp32", None


def require_openvino() -> None:
    from pytest_onnx_parity.testing.runtimes import require_runtime

    require_runtime("openvino")


def rel(a: np.ndarray, e: np.ndarray) -> float:
    e64 = np.asarray(e, np.float64)
    return float(np.abs(np.asarray(a, np.float64) - e64).max() / np.sqrt(np.mean(e64**2)))


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory):
    """resnet18 (random weights), its dynamo export, a seeded batch of 2 and torch's logits on it."""
    from pytest_onnx_parity import export_onnx, load_model
    from pytest_onnx_parity.preprocessing.dataconfig import resolve_data_config
    from pytest_onnx_parity.runtime.forward import random_batch, torch_forward

    model = load_model("resnet18")
    path = export_onnx(model, cache_dir=tmp_path_factory.mktemp("ov-cache")).path
    x = random_batch(resolve_data_config(model), 2, 0)
    return model, Path(path), x, torch_forward(model, x)


def ov_run(source, settings: RunSettings, x: np.ndarray, **kw) -> tuple[np.ndarray, RuntimeInfo]:
    runner = open_runner(source, settings, **kw)
    try:
        return runner.run(None, {runner.get_inputs()[0].name: x})[0], runner.info()
    finally:
        runner.close()


# ------------------------------------------------------------------ without OpenVINO: options, messages, the rule

def test_options_are_compile_config_and_unknown_keys_name_the_valid_ones() -> None:
    device, cfg = compile_config(RunSettings(runtime="openvino(INFERENCE_PRECISION_HINT=fp32,NUM_STREAMS=1)", threads=3))
    assert device == "CPU" and cfg == {"INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": 3}
    assert compile_config(RunSettings(runtime="openvino(device=gpu,EXECUTION_MODE_HINT=accuracy)")) == (
        "GPU", {"EXECUTION_MODE_HINT": "ACCURACY"})
    with pytest.raises(SpecError, match="unknown OpenVINO option 'PRECISION'.*INFERENCE_PRECISION_HINT") as exc:
        compile_config(RunSettings(runtime="openvino(PRECISION=f32)"))
    assert isinstance(exc.value, OnnxParityError)
    with pytest.raises(SpecError, match="choose f32, bf16 or f16"):
        compile_config(RunSettings(runtime="openvino(INFERENCE_PRECISION_HINT=f8)"))
    assert declared_precision(BF16) == "bf16" and declared_precision(F32) == "fp32" and declared_precision(DEFAULT) is None


def test_missing_openvino_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    assert runtime_missing(DEFAULT) == MISSING
    assert "onnx-parity runtimes --install openvino" in MISSING and "pip install openvino" in MISSING
    with pytest.raises(VariantSkip, match="pip install openvino"):
        OpenVinoRunner.open(b"", DEFAULT)


@pytest.mark.parametrize("flags, expected", [(frozenset({"avx2", "avx512_bf16"}), "avx512_bf16"),
                                             (frozenset({"amx_bf16", "avx512_bf16"}), "amx_bf16")])
def test_a_bf16_default_names_the_cpu_feature(flags: frozenset[str], expected: str) -> None:
    precision, reason = effective_precision("<Type: 'bfloat16'>", "ExecutionMode.PERFORMANCE", False, flags=flags)
    assert precision == "bf16" and expected in reason and "INFERENCE_PRECISION_HINT=f32" in reason
    assert effective_precision("<Type: 'float32'>", "ExecutionMode.PERFORMANCE", False, flags=frozenset({"avx2"}))[0] == "fp32"
    assert effective_precision("bf16", "PERFORMANCE", True, flags=flags) == (
        "bf16", "INFERENCE_PRECISION_HINT was given; the compiled model reads bf16")
    assert effective_precision("<Type: 'dynamic'>", "ExecutionMode.ACCURACY", False)[0] is None


def _info(precision: str | None, reason: str = "") -> RuntimeInfo:
    return RuntimeInfo(runtime="openvino", backend="CPU", precision=precision, precision_reason=reason)


def test_the_verdict_names_an_undeclared_lower_precision() -> None:
    reason = effective_precision("bfloat16", "PERFORMANCE", False, flags=frozenset({"avx512_bf16"}))[1]
    msg = precision_mismatch("fp32", _info("bf16", reason), None)
    assert msg is not None
    for part in ("bfloat16", "avx512_bf16", 'openvino(INFERENCE_PRECISION_HINT=f32)',
                 'openvino(INFERENCE_PRECISION_HINT=bf16)'):
        assert part in msg, part
    assert effective_profile("fp32", _info("bf16", reason), None) == "fp32"
    # declared: judged by the bf16 profile, nothing named
    assert precision_mismatch("fp32", _info("bf16"), "bf16") is None
    assert effective_profile("fp32", _info("bf16"), "bf16") == "bf16"
    # what the file asks for, or more, is no mismatch; an fp16 file run in bf16 is
    assert precision_mismatch("fp32", _info("fp32"), None) is None
    assert precision_mismatch("fp16", _info("fp32"), None) is None
    assert precision_mismatch("fp32", _info(None), None) is None
    assert "float16" in (precision_mismatch("fp16", _info("bf16"), None) or "")
    # asked for f16, ran bf16 (a CPU with bf16 but no fp16 arithmetic): named
    assert precision_mismatch("fp32", _info("bf16"), "fp16") is not None
    assert effective_profile("int8", _info("bf16"), None) == "int8"


def test_bf16_is_a_runtime_profile_not_a_file_precision() -> None:
    from pytest_onnx_parity import axes
    from pytest_onnx_parity.tolerances import layer_tolerance, precision_profile

    prof = precision_profile("bf16")
    assert "bf16" not in axes.PRECISIONS
    assert prof.logits_atol_factor > precision_profile("fp16").logits_atol_factor
    tol = layer_tolerance(precision="bf16")
    assert tol.rtol == prof.layer_rtol and tol.elem_rtol == prof.layer_elem_rtol and tol.source == "bf16 profile"
    with pytest.raises(SpecError, match="bf16"):
        precision_profile("fp8")


# ------------------------------------------------------------------ OpenVINO on resnet18

def test_f32_agrees_with_python_onnxruntime(resnet) -> None:
    require_openvino()
    _, path, x, _ = resnet
    ort_runner, ov_runner = open_runner(path), open_runner(path, F32)
    assert [(i.name, i.shape, i.type) for i in ov_runner.get_inputs()] == [
        (i.name, i.shape, i.type) for i in ort_runner.get_inputs()]
    assert [(o.name, o.shape, o.type) for o in ov_runner.get_outputs()] == [
        (o.name, o.shape, o.type) for o in ort_runner.get_outputs()]
    name = ort_runner.get_inputs()[0].name
    expected = ort_runner.run(None, {name: x})[0]
    assert rel(ov_runner.run(None, {name: x})[0], expected) <= 1e-5
    info = ov_runner.info()
    assert (info.precision, info.backend, info.providers, info.extra["hint_given"]) == ("fp32", "CPU", ["CPU"], True)
    assert info.versions["openvino"] and info.threads and info.threads >= 1


def test_the_default_precision_is_what_the_cpu_implies(resnet) -> None:
    require_openvino()
    _, path, x, e = resnet
    from pytest_onnx_parity.tolerances import logits_tolerance

    actual, info = ov_run(path, DEFAULT, x)
    expected, flag = cpu_default()
    assert info.extra["hint_given"] is False
    assert info.precision == expected, info
    tol = logits_tolerance(e)
    atol, rtol = tol.atol, tol.rtol
    outside = np.abs(actual - e) > atol + rtol * np.abs(e)
    msg = precision_mismatch("fp32", info, declared_precision(DEFAULT))
    if flag is None:  # an AVX2 CPU: float32 by default, nothing to name
        assert msg is None and not outside.any()
        return
    assert outside.any(), f"{expected} logits within float32's tolerance: the default did not run in {expected}"
    named = {"bf16": "bfloat16", "fp16": "float16"}[expected]
    assert msg is not None and named in msg and flag in msg and "INFERENCE_PRECISION_HINT=f32" in msg, msg


def test_declared_bf16_is_judged_by_the_bf16_profile(resnet, tmp_path: Path) -> None:
    """A clean file passes at the bf16 profile (logits and each layer's own error, OpenVINO in bf16); a 5% fault
    in one layer fails the per-layer check there."""
    require_openvino()
    import onnx

    from pytest_onnx_parity import compare_layers
    from pytest_onnx_parity.testing import scale_layer_weights
    from pytest_onnx_parity.tolerances import layer_tolerance, logits_tolerance

    model, path, x, e = resnet
    actual, info = ov_run(path, BF16, x)
    declared = declared_precision(BF16)
    assert precision_mismatch("fp32", info, declared) is None
    profile = effective_profile("fp32", info, declared)
    assert profile == "bf16"
    tol = logits_tolerance(e, precision=profile)
    atol, rtol = tol.atol, tol.rtol
    assert (np.abs(actual - e) <= atol + rtol * np.abs(e)).all()
    clean = compare_layers(model, path, x[:1], settings=BF16, **layer_tolerance(precision=profile).layer_kwargs())
    assert clean.passed and clean.forced_runs >= 1, clean.own_note
    bad = tmp_path / "fault.onnx"
    onnx.save(scale_layer_weights(model, path, FAULT_LAYER, 1.05), str(bad))
    faulty = compare_layers(model, bad, x[:1], settings=BF16, **layer_tolerance(precision=profile).layer_kwargs())
    assert not faulty.passed
    assert faulty.first_divergence is not None
    first = faulty.first_divergence
    assert FAULT_LAYER in (first.name, *first.fused), first.name


def _with_outputs(path: Path, n: int):
    """The file with ``n`` intermediate float values added as outputs (as the per-layer pass does)."""
    import onnx

    from pytest_onnx_parity.onnxfile.io import load_onnx_proto

    proto = load_onnx_proto(path, weights=True)
    values = [node.output[0] for node in proto.graph.node if node.op_type in ("Conv", "Relu", "Add", "MaxPool")]
    picked = values[:: max(1, len(values) // n)][:n]
    extra = onnx.ModelProto()
    extra.graph.output.extend(onnx.helper.make_tensor_value_info(v, onnx.TensorProto.FLOAT, None) for v in picked)
    return proto, picked, extra


def test_many_output_bytes_models_map_their_names(resnet) -> None:
    require_openvino()
    _, path, x, _ = resnet
    proto, picked, extra = _with_outputs(path, 24)
    base = proto.SerializeToString()
    # appended outputs (a ModelProto's bytes plus a graph holding only the new outputs, as protobuf merges them)
    data = base + extra.SerializeToString()
    ort_runner, ov_runner = open_runner(data), open_runner(data, F32)
    names = [o.name for o in ort_runner.get_outputs()]
    assert [o.name for o in ov_runner.get_outputs()] == names and set(picked) < set(names)
    wanted = list(reversed(picked))[:20] + [names[0]]
    feeds = {"input": x[:1]}
    for name, a, b in zip(wanted, ov_runner.run(wanted, feeds), ort_runner.run(wanted, feeds)):
        assert a.shape == b.shape, name
        assert rel(a, b) <= 1e-4, name
    with pytest.raises(OnnxParityError, match="no output"):
        ov_runner.run(["no_such_value"], feeds)


def test_external_data_from_a_path_and_from_bytes(resnet, tmp_path: Path) -> None:
    require_openvino()
    _, path, x, _ = resnet
    from pytest_onnx_parity.onnxfile.io import load_onnx_proto, save_onnx

    ext = save_onnx(load_onnx_proto(path, weights=True), tmp_path / "ext" / "model.onnx", external=True)
    assert any(p.name != "model.onnx" for p in ext.parent.iterdir())
    expected = open_runner(path).run(None, {"input": x})[0]
    assert rel(ov_run(ext, F32, x)[0], expected) <= 1e-5
    graph_only = load_onnx_proto(ext).SerializeToString()  # weights still in the file beside it
    got = ov_run(graph_only, F32, x, config={EXT_DIR_KEY: str(ext.parent)})[0]
    assert rel(got, expected) <= 1e-5


def test_a_file_openvino_cannot_read_names_the_fix(tmp_path: Path) -> None:
    require_openvino()
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"this is not an ONNX file")
    with pytest.raises(OnnxFileError, match="model.onnx"):
        open_runner(bad, F32)
    with pytest.raises(OnnxFileError, match="OpenVINO cannot read the model.*re-export"):
        open_runner(b"\x08\x07garbage", F32)


def test_a_device_openvino_lacks_is_a_skip_and_a_bad_option_value_is_an_error(resnet) -> None:
    require_openvino()
    _, path, _, _ = resnet
    with pytest.raises(VariantSkip, match="no device NOSUCHDEVICE"):
        open_runner(path, RunSettings(runtime="openvino(device=NOSUCHDEVICE)"))
    with pytest.raises(SpecError, match="refused the options"):
        open_runner(path, RunSettings(runtime="openvino(NUM_STREAMS=lots)"))


# ------------------------------------------------------------------ Python onnxruntime on GPU providers

GPU_PROVIDERS = {"CUDAExecutionProvider(device_id=0)": 1e-3, "TensorrtExecutionProvider(trt_fp16_enable=True)": 0.15}


@pytest.mark.parametrize("provider", list(GPU_PROVIDERS))
def test_a_provider_this_build_lacks_is_named_missing(provider: str) -> None:
    import onnxruntime as ort

    settings = RunSettings(provider=provider)
    name = settings.provider_spec.name
    assert dict(settings.provider_spec.options) in ({"device_id": 0}, {"trt_fp16_enable": True})
    if name in ort.get_available_providers():
        pytest.skip(f"this onnxruntime build has {name}")
    why = runtime_missing(settings)
    assert why is not None and name in why and "not in this onnxruntime build" in why


@pytest.mark.parametrize("provider", list(GPU_PROVIDERS))
def test_gpu_providers_run_through_provider_options(provider: str, resnet) -> None:
    settings = RunSettings(provider=provider)
    why = runtime_missing(settings)
    if why:
        pytest.skip(why)
    _, path, x, e = resnet
    try:
        runner = open_runner(path, settings)
    except VariantSkip as exc:  # in this build, but no device here
        pytest.skip(str(exc))
    assert runner.get_providers()[0] == settings.provider_spec.name
    got = runner.run(None, {"input": x})[0]
    assert rel(got, e) <= GPU_PROVIDERS[provider]
    assert runner.info().providers[0] == settings.provider_spec.name
