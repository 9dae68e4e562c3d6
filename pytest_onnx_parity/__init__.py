"""pytest-onnx-parity: does the ONNX file you deploy behave like the timm model you trained?

The package imports nothing heavy at import time: torch, timm, onnx and onnxruntime
are loaded by the functions that need them (attribute access below is lazy).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    ExportError,
    ImageError,
    InconclusiveResult,
    MissingMetadataError,
    OnnxFileError,
    OnnxParityError,
    ParityFailure,
    PreprocessError,
    SpecError,
    UnknownModelError,
    WeightsError,
)

if TYPE_CHECKING:  # pragma: no cover
    from .checks.weightmatch import WeightsComparison, compare_weights
    from .compare import assert_logits_close, assert_topk_agreement, compare_logits, compare_topk
    from .layers import LayerComparison, LayerResult, assert_layers_close, compare_layers
    from .model.build import load_model, load_model_record
    from .model.record import LoadedModel, ModelRecord
    from .onnxfile.embedded import run_embedded
    from .onnxfile.export import OnnxExport, export_onnx
    from .onnxfile.metadata import read_data_config, read_metadata
    from .onnxfile.pregraph import embed_preprocessing, preprocessing_graph
    from .onnxfile.stamp import stamp_onnx
    from .preprocessing.dataconfig import resolve_data_config
    from .preprocessing.diagnose import PreprocessingComparison, compare_preprocessing
    from .preprocessing.transform import preprocess
    from .results import CheckResult, ParityResult
    from .run import check_parity
    from .model.checkpoint import Checkpoint, read_checkpoint
    from .specs import ModelSpec, parse_model_args, parse_spec

__version__ = "0.1.0"

_LAZY = {
    "load_model": "model.build",
    "load_model_record": "model.build",
    "LoadedModel": "model.record",
    "ModelRecord": "model.record",
    "ModelSpec": "specs",
    "parse_spec": "specs",
    "parse_model_args": "specs",
    "read_checkpoint": "model.checkpoint",
    "Checkpoint": "model.checkpoint",
    "export_onnx": "onnxfile.export",
    "OnnxExport": "onnxfile.export",
    "read_data_config": "onnxfile.metadata",
    "read_metadata": "onnxfile.metadata",
    "resolve_data_config": "preprocessing.dataconfig",
    "preprocess": "preprocessing.transform",
    "compare_preprocessing": "preprocessing.diagnose",
    "PreprocessingComparison": "preprocessing.diagnose",
    "assert_logits_close": "compare",
    "assert_topk_agreement": "compare",
    "compare_logits": "compare",
    "compare_topk": "compare",
    "compare_layers": "layers",
    "assert_layers_close": "layers",
    "LayerComparison": "layers",
    "LayerResult": "layers",
    "check_parity": "run",
    "stamp_onnx": "onnxfile.stamp",
    "preprocessing_graph": "onnxfile.pregraph",
    "embed_preprocessing": "onnxfile.pregraph",
    "run_embedded": "onnxfile.embedded",
    "compare_weights": "checks.weightmatch",
    "WeightsComparison": "checks.weightmatch",
    "ParityResult": "results",
    "CheckResult": "results",
}

__all__ = sorted(
    [
        "__version__",
        "OnnxParityError",
        "UnknownModelError",
        "SpecError",
        "WeightsError",
        "ExportError",
        "MissingMetadataError",
        "OnnxFileError",
        "ImageError",
        "ParityFailure",
        "PreprocessError",
        "InconclusiveResult",
        *_LAZY,
    ]
)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_onnx_parity' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


