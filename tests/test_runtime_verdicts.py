"""The gate on other runtimes, judged by what actually ran: the same verdict on onnxruntime and onnxruntime-web
for several architectures (a planted fault fails on both), a stamped file made elsewhere passes on
onnxruntime-node and onnxruntime-web-browser, OpenVINO's own default precision is named when it is bf16 (and
passes when it is f32), and each entry says which runtime ran it."""
from __future__ import annotations

from pathlib import Path

import pytest

from pytest_onnx_parity import check_parity, export_onnx, load_model
from pytest_onnx_parity.testing.runtimes import require_runtime

ARCHS = ["test_resnet", "test_vit", "test_efficientnet", "test_convnext"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("exports"))


def _faulty_file(arch: str, tmp: Path, cache: str) -> Path:
    """The arch's export with one weight tensor of a late block scaled by 1.5 (the file is wrong)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    exp = export_onnx(arch, exporter="torchscript", cache_dir=cache)
    proto = onnx.load(str(exp.path))
    weights = [t for t in proto.graph.initializer if t.data_type == 1 and len(t.dims) >= 2]
    target = weights[len(weights) * 2 // 3]
    array = numpy_helper.to_array(target).astype(np.float32) * 1.5
    target.CopyFrom(numpy_helper.from_array(array, target.name))
    out = tmp / f"{arch}-faulty.onnx"
    onnx.save(proto, str(out))
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_onnxruntime_and_onnxruntime_web_give_the_same_verdict(arch: str, tmp_path: Path, cache: str) -> None:
    require_runtime("onnxruntime-web")
    exp = export_onnx(arch, exporter="torchscript", cache_dir=cache)
    bad = _faulty_file(arch, tmp_path, cache)
    verdicts = {}
    for runtime in ("onnxruntime", "onnxruntime-web"):
        good = check_parity(arch, onnx=exp.path, runtime=runtime, layers="never", real_images=False)
        wrong = check_parity(arch, onnx=bad, runtime=runtime, layers="never", real_images=False)
        assert good.variant["runtime"] == runtime and good.runtime_info["runtime"] == runtime
        verdicts[runtime] = (good.status, wrong.status)
    assert verdicts["onnxruntime"] == verdicts["onnxruntime-web"] == ("passed", "failed"), verdicts


@pytest.mark.parametrize("runtime", ["onnxruntime-node", "onnxruntime-web-browser"])
def test_a_stamped_file_made_elsewhere_passes_on_the_deployments_runtime(runtime: str, tmp_path: Path) -> None:
    import torch

    from pytest_onnx_parity import stamp_onnx

    require_runtime(runtime)
    model = load_model("test_resnet")
    path = tmp_path / "made-elsewhere.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 160, 160),), str(path), dynamo=False, input_names=["pixels"],
                      output_names=["logits"], dynamic_axes={"pixels": {0: "n"}, "logits": {0: "n"}})
    stamp_onnx(path, "test_resnet")
    result = check_parity("test_resnet", onnx=path, runtime=runtime, layers="always")
    assert result.status == "passed", result.failure_message()
    assert result.variant["runtime"] == runtime and result.runtime_info["runtime"] == runtime
    assert result.check("real_images").status == "passed" and result.check("layers").status == "passed"


def _bf16_cpu() -> bool:
    from pytest_onnx_parity.runtime.environment import cpu_info

    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_info().get("flags", ())))


def test_openvinos_own_default_is_named_when_it_is_bf16_and_f32_passes(cache: str) -> None:
    """At OpenVINO's default a float32 file runs in bf16 on a CPU with AVX512_BF16/AMX: the gate fails naming bf16,
    the CPU feature and INFERENCE_PRECISION_HINT=f32; with that hint it passes. Where the default is f32, the
    default passes and says it ran f32."""
    require_runtime("openvino")
    exp = export_onnx("resnet18", exporter="torchscript", cache_dir=cache)
    default = check_parity("resnet18", onnx=exp.path, runtime="openvino", layers="never", real_images=False)
    f32 = check_parity("resnet18", onnx=exp.path, runtime="openvino(INFERENCE_PRECISION_HINT=f32)", layers="never",
                       real_images=False)
    assert f32.status == "passed", f32.failure_message()
    assert f32.runtime_info["precision"] == "fp32"
    assert default.variant["runtime"] == "openvino"
    if _bf16_cpu():
        assert default.runtime_info["precision"] == "bf16"
        assert default.status == "failed", default.failure_message()
        message = default.check("logits").message
        assert "bfloat16" in message and "INFERENCE_PRECISION_HINT=f32" in message
        assert "bf16" in message.lower() and ("avx512_bf16" in message or "amx" in message.lower())
    else:
        assert default.status == "passed", default.failure_message()
        assert default.runtime_info["precision"] in ("fp32", None)


def test_declared_bf16_is_judged_at_the_bf16_profile(cache: str) -> None:
    require_runtime("openvino")
    exp = export_onnx("resnet18", exporter="torchscript", cache_dir=cache)
    result = check_parity("resnet18", onnx=exp.path, runtime="openvino(INFERENCE_PRECISION_HINT=bf16)", layers="never",
                          real_images=False)
    assert result.status == "passed", result.failure_message()
    if _bf16_cpu():
        assert result.runtime_info.get("judged_at") == "bf16"


def test_webgpu_never_passes_a_float16_file_it_cannot_run(cache: str) -> None:
    """WebGPU without shader-f16 refuses an fp16 file or returns zeros: either way the entry is not passed, and says
    why; on an adapter with shader-f16 the file must pass on its numbers."""
    require_runtime("onnxruntime-web-webgpu")
    result = check_parity("test_resnet", precision="fp16", runtime="onnxruntime-web-webgpu", exporter="torchscript",
                          cache_dir=cache, layers="never", real_images=False)
    info = result.runtime_info or {}
    if "shader-f16" in (info.get("features") or []):  # pragma: no cover - a real GPU adapter
        assert result.status == "passed", result.failure_message()
        return
    assert result.status in ("failed", "error"), result.failure_message()
    assert "shader-f16" in result.failure_message()
