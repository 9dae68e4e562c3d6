"""What the gate's header and summary say about a run: the weights it loaded, the data config line."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from pytest_onnx_parity.settings import Settings
from pytest_onnx_parity.specs import parse_spec


def _header(specs: list[str], weights: str = "random") -> str:
    from pytest_onnx_parity.plugin.gate import GatePlugin

    plugin = GatePlugin(SimpleNamespace(stash={}), Settings(weights=weights))  # type: ignore[arg-type]
    parsed = [parse_spec(s, default_weights=weights) for s in specs]
    plugin.specs = lambda: parsed  # type: ignore[method-assign]
    return next(line for line in plugin.pytest_report_header(None) if line.startswith("onnx-parity settings:"))  # type: ignore[arg-type]


def test_the_header_names_the_weights_loaded_not_the_default() -> None:
    line = _header(["resnet18=/runs/a/model_best.pth.tar", "resnet18=/runs/b/last.safetensors"])
    assert "weights=random" not in line, line
    assert "weights=model_best.pth.tar,last.safetensors" in line
    line = _header(["resnet18=pretrained", "resnet34"])  # the second takes the default
    assert "weights=pretrained,random" in line
    assert "weights=pretrained" in _header(["resnet18"], weights="pretrained")


def test_a_differing_data_config_names_its_fields_on_its_first_line(tmp_path: Path) -> None:
    """The summary shows a check by its first line (results.brief): it must carry the differing fields,
    never end in 'training:' with the fields on the lines below."""
    import onnx
    from onnx import TensorProto, helper

    from pytest_onnx_parity.checks.data_config import check
    from pytest_onnx_parity.onnxfile.metadata import write_metadata
    from pytest_onnx_parity.results import brief

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    base = {"input_size": [3, 224, 224], "interpolation": "bicubic", "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225], "crop_pct": 0.875, "crop_mode": "center"}
    write_metadata(path, base)
    want = {**base, "input_size": [3, 128, 128], "mean": [0.5] * 3, "std": [0.5] * 3}
    from pytest_onnx_parity.model.record import ModelRecord

    record = ModelRecord(data_config=want, data_config_source="checkpoint_args")
    ctx = SimpleNamespace(record=record, model_config=want, path=path, model_label="resnet18")
    result = check(ctx)  # type: ignore[arg-type]
    assert result.status == "failed"
    line = brief(result.message)
    assert not line.endswith(":"), line
    assert line.startswith("The ONNX file's data config differs from the model's own "
                           "(from the checkpoint's training args) in input_size, mean, std"), line
