"""What a report part reads of a run: the :class:`RunState` protocol (:class:`pytest_onnx_parity.run.ParityRun` is one)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from ..checks.context import CheckContext
    from ..model.record import LoadedModel
    from ..onnxfile.export import OnnxExport
    from ..options import ParityOptions
    from ..results import ParityResult
    from ..runtime.runner import Runner, RunSettings


class RunState(Protocol):
    """What a bundle reads of a run (a :class:`pytest_onnx_parity.run.ParityRun`). One that stopped early
    holds None or lacks some: each is read with ``getattr``, and what cannot be made is recorded."""

    result: "ParityResult"
    built: "LoadedModel | None"  # the module and its record
    export: "OnnxExport | None"
    options: "ParityOptions"

    @property
    def model(self) -> "torch.nn.Module | None": ...

    @property
    def inputs(self) -> "np.ndarray | None": ...

    @property
    def settings(self) -> "RunSettings": ...

    @property
    def context(self) -> "CheckContext | None": ...

    def session(self) -> "Runner": ...
