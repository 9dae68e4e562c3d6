"""ONNX Runtime sessions, the one home: providers, optimisation level, threads, log level, and the
error a file ONNX Runtime cannot load gets.

Every session of the package is made by :func:`make_session` (``reproduce.py`` alone builds its
own: it runs in a bundle where this package is not installed). :func:`missing_provider` says
why a provider cannot run here.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..axes import DEFAULT_PROVIDER, ORT_OPT_LEVELS
from ..errors import OnnxFileError

if TYPE_CHECKING:  # pragma: no cover
    import onnx
    import onnxruntime

#: ONNX Runtime's log severity for every session: errors only (its warnings about unused
#: initializers and the like are noise to a user of the gate)
LOG_SEVERITY = 3


def make_session(model: "str | os.PathLike[str] | bytes | onnx.ModelProto", *, ort_opt: str = "all",
                 threads: int | None = None, provider: str = DEFAULT_PROVIDER, mem_arena: bool = True,
                 config: Mapping[str, str] | None = None) -> "onnxruntime.InferenceSession":
    """A session on ``model`` (a path, serialised bytes or a ModelProto) at optimisation level
    ``ort_opt`` (one of :data:`~..axes.ORT_OPT_LEVELS`) on ``provider``; ``config``: extra session
    config entries. A file ONNX Runtime cannot load is an :class:`OnnxFileError` naming the fix."""
    import onnxruntime as ort

    if ort_opt not in ORT_OPT_LEVELS:
        raise OnnxFileError(f"unknown ONNX Runtime optimisation level {ort_opt!r}: choose one of {', '.join(ORT_OPT_LEVELS)}")
    path: Path | None = None
    source: Any = model
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise OnnxFileError(f"ONNX file not found: {path}")
        source = str(path)
    elif hasattr(model, "SerializeToString"):
        source = model.SerializeToString()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_OPT_LEVELS[ort_opt])
    opts.log_severity_level = LOG_SEVERITY
    opts.enable_cpu_mem_arena = mem_arena
    if threads:
        opts.intra_op_num_threads = threads
    for key, value in (config or {}).items():
        opts.add_session_config_entry(key, value)
    try:
        return ort.InferenceSession(source, sess_options=opts, providers=[provider])
    except Exception as exc:
        what = str(path) if path is not None else "the model"
        hint = ""
        if path is not None:
            from ..onnxfile.cache import repair_hint

            hint = f" {repair_hint(path)}"
        raise OnnxFileError(f"ONNX Runtime cannot load {what}: {type(exc).__name__}: {str(exc).strip()[:500]}.{hint}") from exc


def missing_provider(provider: str) -> str | None:
    """Why ``provider`` cannot run here (None when this onnxruntime build has it)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if provider in available:
        return None
    return (f"execution provider {provider} is not in this onnxruntime build (available: {', '.join(available)}); "
            f"install the onnxruntime package that ships it (e.g. onnxruntime-gpu for CUDAExecutionProvider) and run "
            "on a machine that has its device")
