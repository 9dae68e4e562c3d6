"""A file converted elsewhere says nothing of its precision: it is told from its graph.

Judged at float32's tolerances, a clean float16 file made by onnxruntime's own
``convert_float_to_float16`` failed at its first layer; told from its float16 weights, it is
judged at the fp16 profile and passes (issue 19, the precision from the file itself).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_onnx_parity import check_parity, export_onnx, stamp_onnx
from pytest_onnx_parity.onnxfile.file_precision import file_precision, graph_precision

if TYPE_CHECKING:  # pragma: no cover
    import onnx


@pytest.fixture(scope="module")
def fp32_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx("resnet18", exporter="torchscript", cache_dir=str(tmp_path_factory.mktemp("c"))).path


def _converted(fp32_file: Path, converter: str, keep_io_types: bool) -> "onnx.ModelProto":
    import onnx

    if converter == "onnxruntime":
        from onnxruntime.transformers.float16 import convert_float_to_float16
    else:
        from onnxconverter_common.float16 import convert_float_to_float16
    model = convert_float_to_float16(onnx.load(str(fp32_file)), keep_io_types=keep_io_types)
    del model.metadata_props[:]  # as it comes from a pipeline: no precision, no data config
    return model


@pytest.mark.parametrize("keep_io_types", [True, False])
@pytest.mark.parametrize("converter", ["onnxruntime", "onnxconverter_common"])
def test_a_float16_file_converted_elsewhere_is_judged_as_fp16_per_layer(fp32_file: Path, tmp_path: Path,
                                                                       converter: str, keep_io_types: bool) -> None:
    """Clean, it passes every check, the per-layer one on each module's own error included; with one conv's
    weights scaled by 1.05 in the float16 file, the gate fails naming that conv's block (the end-to-end
    difference of a 5% fault hides in float16 rounding grown through the depth; its own error does not)."""
    import onnx

    from pytest_onnx_parity import load_model
    from pytest_onnx_parity.testing import scale_layer_weights

    path = tmp_path / "fp16.onnx"
    onnx.save(_converted(fp32_file, converter, keep_io_types), str(path))
    assert graph_precision(path) == "fp16" and file_precision(path) == "fp16"
    stamp_onnx(path, "resnet18")
    r = check_parity("resnet18", onnx=path)
    assert r.variant["precision"] == "fp16"
    assert r.passed, r.failure_message()
    layers = r.check("layers")
    assert layers.status == "passed" and r.layer_comparison.forced_runs == 1
    assert all(row.own_diff is not None for row in r.layer_comparison.layers)
    if (converter == "onnxruntime") == keep_io_types:
        return  # the planted fault on two of the four files (one per converter, one per keep_io_types): time

    bad = tmp_path / "fault.onnx"
    onnx.save(scale_layer_weights(load_model("resnet18"), path, "layer2.1.conv1", 1.05), str(bad))
    r = check_parity("resnet18", onnx=bad)
    assert r.status == "failed", r.failure_message()
    assert r.check("layers").status == "failed"
    assert r.first_divergence in ("layer2.1.conv1", "layer2.1.bn1"), r.check("layers").message


def test_a_quantised_file_is_told_as_int8_and_a_plain_one_as_fp32(fp32_file: Path, tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    assert graph_precision(fp32_file) == "fp32"
    q = tmp_path / "int8.onnx"
    quantize_dynamic(str(fp32_file), str(q), weight_type=QuantType.QInt8)
    assert graph_precision(q) == "int8"
