"""A file converted elsewhere says nothing of its precision: it is told from its graph.

Judged at float32's tolerances, a clean float16 file made by onnxruntime's own
``convert_float_to_float16`` failed at its first layer; told from its float16 weights, it is
judged at the fp16 profile and passes (issue 19, the precision from the file itself).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from pytest_onnx_parity import check_parity, export_onnx, stamp_onnx
from pytest_onnx_parity.onnxfile.precision import file_precision, graph_precision


@pytest.fixture(scope="module")
def fp32_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx("resnet18", exporter="torchscript", cache_dir=str(tmp_path_factory.mktemp("c"))).path


@pytest.mark.parametrize("keep_io_types", [True, False])
def test_a_float16_file_converted_elsewhere_is_judged_as_fp16_and_passes(fp32_file: Path, tmp_path: Path,
                                                                        keep_io_types: bool) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(fp32_file)), keep_io_types=keep_io_types)
    del model.metadata_props[:]  # as it comes from a pipeline: no precision, no data config
    path = tmp_path / "fp16.onnx"
    onnx.save(model, str(path))
    assert graph_precision(path) == "fp16" and file_precision(path) == "fp16"
    stamp_onnx(path, "resnet18")
    r = check_parity("resnet18", onnx=path, layers="never")
    assert r.variant["precision"] == "fp16"
    assert r.passed, r.failure_message()


def test_a_quantised_file_is_told_as_int8_and_a_plain_one_as_fp32(fp32_file: Path, tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    assert graph_precision(fp32_file) == "fp32"
    q = tmp_path / "int8.onnx"
    quantize_dynamic(str(fp32_file), str(q), weight_type=QuantType.QInt8)
    assert graph_precision(q) == "int8"
