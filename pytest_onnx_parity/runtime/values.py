"""Intermediate values on the variant's runtime, read one at a time: the per-layer pass, its teacher-forced
isolation, headroom probes and blame all ask a runner for many values of one run. ONNX Runtime keeps them as
``OrtValue`` (read, and freed, as each is compared); another runtime gives arrays, wrapped the same way."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .runner import RunSettings, open_runner

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


class Value:
    """An output as the per-layer engine reads it: ``numpy()`` and ``shape()``, as an ``OrtValue`` offers."""

    __slots__ = ("_array",)

    def __init__(self, array: "np.ndarray") -> None:
        self._array = array

    def numpy(self) -> "np.ndarray":
        return self._array

    def shape(self) -> list[int]:
        return list(self._array.shape)


def run_values(model: Any, settings: RunSettings | None, names: Sequence[str], feeds: Mapping[str, "np.ndarray"], *,
               mem_arena: bool = True, config: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One run of ``model`` (a path or serialised bytes) on ``settings``' runtime computing ``names``; each value
    has ``numpy()`` and ``shape()``. The runner is closed before returning."""
    runner = open_runner(model, settings or RunSettings(), mem_arena=mem_arena, config=config)
    try:
        fast = getattr(runner, "run_values", None)
        if fast is not None:
            return dict(zip(names, fast(list(names), feeds)))
        return {n: Value(a) for n, a in zip(names, runner.run(list(names), feeds))}
    finally:
        runner.close()


def run_arrays(model: Any, settings: RunSettings | None, names: Sequence[str] | None, feeds: Mapping[str, "np.ndarray"],
               **kwargs: Any) -> list["np.ndarray"]:
    """One run of ``model`` on ``settings``' runtime: ``names`` (None: the graph's outputs) as arrays."""
    runner = open_runner(model, settings or RunSettings(), **kwargs)
    try:
        return runner.run(list(names) if names else None, feeds)
    finally:
        runner.close()


def run_batches(model: Any, settings: RunSettings | None, names: Sequence[str] | None, input_name: str,
                batches: Sequence["np.ndarray"], **kwargs: Any) -> list[list["np.ndarray"]]:
    """One runner on ``model``, each batch fed to ``input_name``: per batch, ``names`` as arrays."""
    runner = open_runner(model, settings or RunSettings(), **kwargs)
    try:
        return [runner.run(list(names) if names else None, {input_name: x}) for x in batches]
    finally:
        runner.close()


def run_feeds(runner: Any, names: Sequence[str] | None, feeds: Mapping[str, "np.ndarray"]) -> list["np.ndarray"]:
    """``runner.run``: the one call through which code outside ``runtime/`` runs a runner it was handed."""
    return runner.run(list(names) if names else None, dict(feeds))
