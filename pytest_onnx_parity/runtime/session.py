"""ONNX Runtime sessions as the package built them before runners (:mod:`.runner`): :func:`make_session`
opens an :class:`~.ort.OrtRunner` (Python onnxruntime) and :func:`missing_provider` says why a provider
cannot run here. Kept for callers of the old names; new code opens :func:`~.runner.open_runner` with the
variant's :class:`~.runner.RunSettings`."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping

from ..axes import DEFAULT_PROVIDER
from .ort import LOG_SEVERITY  # noqa: F401 - re-exported
from .runner import RunSettings

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from .runner import Runner


def make_session(model: "str | os.PathLike[str] | bytes | onnx.ModelProto", *, ort_opt: str = "all",
                 threads: int | None = None, provider: str = DEFAULT_PROVIDER, mem_arena: bool = True,
                 config: Mapping[str, str] | None = None, settings: RunSettings | None = None) -> "Runner":
    """A runner on ``model`` (a path, serialised bytes or a ModelProto): ``settings`` when given, else Python
    onnxruntime at optimisation level ``ort_opt`` on ``provider``; ``config``: extra session config entries."""
    from .runner import open_runner

    settings = settings or RunSettings(provider=provider, ort_opt=ort_opt, threads=threads)
    return open_runner(model, settings, mem_arena=mem_arena, config=config)


def missing_provider(provider: str) -> str | None:
    """Why ``provider`` cannot run here (None when this onnxruntime build has it)."""
    from .ort import OrtRunner

    return OrtRunner.missing(RunSettings(provider=provider))


def runner_settings(options: Any) -> RunSettings:
    return RunSettings.of(options)


__all__ = ["make_session", "missing_provider", "runner_settings", "Any"]
