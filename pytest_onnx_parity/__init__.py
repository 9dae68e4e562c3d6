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
    SpecError,
    UnknownModelError,
    WeightsError,
)

__version__ = "0.1.0"

_LAZY = {
    "load_model": "models",
    "ModelSpec": "specs",
    "parse_spec": "specs",
    "export_onnx": "export",
    "OnnxExport": "export",
    "read_data_config": "dataconfig",
    "read_metadata": "dataconfig",
    "resolve_data_config": "dataconfig",
    "preprocess": "preprocessing",
    "assert_logits_close": "compare",
    "assert_topk_agreement": "compare",
    "compare_logits": "compare",
    "compare_topk": "compare",
    "compare_layers": "layers",
    "assert_layers_close": "layers",
    "LayerComparison": "layers",
    "LayerResult": "layers",
    "check_parity": "parity",
    "stamp_onnx": "shipped",
    "preprocessing_graph": "pregraph",
    "embed_preprocessing": "pregraph",
    "run_embedded": "pregraph",
    "compare_weights": "weightcheck",
    "WeightsComparison": "weightcheck",
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


if TYPE_CHECKING:  # pragma: no cover
    from .compare import assert_logits_close, assert_topk_agreement, compare_logits, compare_topk
    from .dataconfig import read_data_config, read_metadata, resolve_data_config
    from .export import OnnxExport, export_onnx
    from .layers import LayerComparison, LayerResult, assert_layers_close, compare_layers
    from .models import load_model
    from .parity import check_parity
    from .pregraph import embed_preprocessing, preprocessing_graph, run_embedded
    from .shipped import stamp_onnx
    from .weightcheck import WeightsComparison, compare_weights
    from .results import CheckResult, ParityResult
    from .preprocessing import preprocess
    from .specs import ModelSpec, parse_spec
