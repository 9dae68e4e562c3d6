"""The vocabulary of a deployment: exporters, precisions, ONNX Runtime levels, providers, the matrix's
axis names. A leaf: it imports nothing, and every module that needs one of these lists reads it here.
"""
from __future__ import annotations

#: torch's ONNX exporters (``torch.onnx.export(dynamo=True)`` and ``dynamo=False``)
EXPORTERS = ("dynamo", "torchscript")
#: the precisions a file is checked at (each has a tolerance profile in :mod:`.tolerances`)
PRECISIONS = ("fp32", "fp16", "int8")
#: --onnx-parity-ort-opt value -> onnxruntime.GraphOptimizationLevel member ("all" is ONNX Runtime's default)
ORT_OPT_LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                  "all": "ORT_ENABLE_ALL"}
DEFAULT_PROVIDER = "CPUExecutionProvider"
#: where the file runs (--onnx-parity-runtime): Python's onnxruntime, or the deployment's own runtime
RUNTIMES = ("onnxruntime", "onnxruntime-node", "onnxruntime-web", "onnxruntime-web-browser", "onnxruntime-web-webgpu",
            "openvino")
DEFAULT_RUNTIME = "onnxruntime"
#: the runtimes that run in Node.js or in headless Chromium (runtime/node.py)
JS_RUNTIMES = ("onnxruntime-node", "onnxruntime-web", "onnxruntime-web-browser", "onnxruntime-web-webgpu")
#: where the deployment's preprocessing runs: ``preprocess`` beside the file, or inside it
PREPROCESSING = ("external", "embedded")
#: the axes of the deployment matrix, in the order item ids and report columns name them
AXES = ("exporter", "opset", "precision", "ort_opt", "provider", "runtime", "image_size", "preprocessing", "preprocess",
        "simplifier")
#: --onnx-parity-preprocess default: the file's own metadata through ``preprocess``
DEFAULT_PREPROCESS = "metadata"
#: --onnx-parity-simplifier values: the export as it is, or run through onnxslim or onnx-simplifier
SIMPLIFIERS = ("none", "onnxslim", "onnxsim")
#: --onnx-parity-layers values
LAYER_MODES = ("always", "on-failure", "never")
#: --onnx-parity-weights values (a checkpoint path is the third kind of weights)
WEIGHT_KINDS = ("random", "pretrained")
#: --onnx-parity-weight-set values: which weights of a timm train.py checkpoint holding both (EMA first, as timm)
WEIGHT_SETS = ("ema", "state_dict")


def use_ema(weight_set: str | None) -> bool:
    """Whether a weight-set value asks for a train.py checkpoint's EMA weights (the default, as timm loads them)."""
    return (weight_set or WEIGHT_SETS[0]) == "ema"
