"""The runner interface: one door for every runtime, the variant's settings reaching every consumer, a fallback
never passed as the provider asked for, and a fault that only one optimisation level shows found at that level."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_onnx_parity import check_parity, export_onnx
from pytest_onnx_parity.errors import SpecError, VariantSkip
from pytest_onnx_parity.runtime import runner as runner_mod
from pytest_onnx_parity.runtime.ort import OrtRunner
from pytest_onnx_parity.runtime.runner import RunSettings, open_runner, parse_provider, parse_runtime


def test_runtime_and_provider_options_parse_like_model_arguments() -> None:
    rt = parse_runtime("openvino(INFERENCE_PRECISION_HINT=f32,NUM_STREAMS=1)")
    assert rt.name == "openvino" and rt.opts == {"INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": 1}
    assert str(rt) == "openvino(INFERENCE_PRECISION_HINT=f32,NUM_STREAMS=1)"
    assert parse_provider("CUDAExecutionProvider(device_id=0)").opts == {"device_id": 0}
    assert parse_provider("OpenVINOExecutionProvider(device_type=CPU)").opts == {"device_type": "CPU"}
    with pytest.raises(SpecError, match="unknown runtime 'tensorrt'"):
        parse_runtime("tensorrt")
    with pytest.raises(SpecError, match="ending in"):
        parse_runtime("openvino(INFERENCE_PRECISION_HINT=f32")


@pytest.fixture(scope="module")
def small_file(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return export_onnx("test_resnet", cache_dir=str(tmp_path_factory.mktemp("cache")), exporter="torchscript")


def test_an_unknown_optimisation_level_is_refused_by_every_onnx_runtime_runner(small_file: Any) -> None:
    """One check (RunSettings.check_level), made on opening by the Python, Node.js and browser runners alike."""
    from pytest_onnx_parity.errors import OnnxFileError
    from pytest_onnx_parity.runtime.browser import BrowserRunner
    from pytest_onnx_parity.runtime.node import NodeRunner

    RunSettings(ort_opt="basic").check_level()
    for runner_cls, runtime in ((OrtRunner, "onnxruntime"), (NodeRunner, "onnxruntime-node"),
                                (BrowserRunner, "onnxruntime-web-browser")):
        with pytest.raises(OnnxFileError, match="optimisation level 'fastest': choose one of disabled, basic"):
            runner_cls.open(small_file, RunSettings(runtime=runtime, ort_opt="fastest"))


def test_the_python_runner_says_what_ran(small_file: Any) -> None:
    r = open_runner(small_file.path, RunSettings(ort_opt="basic"))
    x = np.zeros((1, *small_file.data_config["input_size"]), np.float32)
    (out,) = r.run(None, {r.get_inputs()[0].name: x})
    info = r.info().to_dict()
    assert out.shape[0] == 1 and info["runtime"] == "onnxruntime" and info["providers"] == ["CPUExecutionProvider"]
    assert info["ort_opt"] == "basic" and info["versions"]["onnxruntime"]
    r.close()


def test_a_provider_that_falls_back_is_never_run_as_asked(small_file: Any) -> None:
    """onnxruntime asked for a provider it cannot start runs the CPU silently; the runner refuses to call that
    the provider's result."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():  # pragma: no cover - a machine with a GPU build
        pytest.skip("this onnxruntime build has CUDA: no fallback to observe")
    with pytest.raises(VariantSkip, match="fell back to CPUExecutionProvider"):
        OrtRunner.open(small_file.path, RunSettings(provider="CUDAExecutionProvider(device_id=0)"))
    why = runner_mod.runtime_missing(RunSettings(provider="CUDAExecutionProvider"))
    assert why is not None and "not in this onnxruntime build" in why


def _plant_mul(data: bytes, value: str, factor: float) -> bytes:
    """The model with ``value`` multiplied by ``factor`` wherever it is read (a planted runtime fault)."""
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load_from_string(data)
    producer = next((n for n in proto.graph.node if value in n.output), None)
    if producer is None:  # a run that feeds the value in (teacher forcing) computes nothing to plant
        return data
    raw = value + "__raw"
    producer.output[:] = [raw if o == value else o for o in producer.output]
    proto.graph.initializer.append(numpy_helper.from_array(np.asarray(factor, np.float32), value + "__factor"))
    proto.graph.node.append(helper.make_node("Mul", [raw, value + "__factor"], [value]))
    return proto.SerializeToString()


def test_the_per_layer_pass_runs_at_the_variants_level(small_file: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A runtime whose 'disabled' level computes one module 1.5x too large (planted) fails that variant, and its
    per-layer pass, teacher-forced isolation included, names the module: it ran at 'disabled', where the fault
    is. At level 'all' the same file passes."""
    import onnx

    from pytest_onnx_parity.layers.scopes import GraphScopes
    from pytest_onnx_parity.model.build import load_model as build

    model = build("test_resnet")
    scopes = GraphScopes(onnx.load(str(small_file.path)), dict(model.named_modules()))
    target_module = next(m for m in scopes.nodes_of if m.endswith("conv1") and "." in m)
    node = scopes.proto.graph.node[max(scopes.nodes_of[target_module])]
    value = node.output[0]

    class LevelFault(OrtRunner):
        @classmethod
        def open(cls, model: Any, settings: RunSettings, **kw: Any) -> "OrtRunner":
            if settings.ort_opt == "disabled":
                data = Path(model).read_bytes() if isinstance(model, (str, Path)) else model
                if hasattr(data, "SerializeToString"):
                    data = data.SerializeToString()
                model = _plant_mul(data, value, 1.5)
            return super().open(model, settings, **kw)

    monkeypatch.setattr(runner_mod, "runner_class", lambda settings: LevelFault)
    bad = check_parity("test_resnet", onnx=small_file.path, ort_opt="disabled", real_images=False)
    assert bad.status == "failed", bad.failure_message()
    layers = bad.check("layers")
    assert layers is not None and layers.status == "failed"
    assert bad.first_divergence is not None and bad.first_divergence.startswith(target_module.rsplit(".", 1)[0])
    good = check_parity("test_resnet", onnx=small_file.path, ort_opt="all", real_images=False)
    assert good.status == "passed", good.failure_message()
    assert good.runtime_info["ort_opt"] == "all" and bad.runtime_info["ort_opt"] == "disabled"
