"""What a check is given: a small typed context, built once per run by :class:`~..run.ParityRun`.

A check is a function ``check(ctx) -> CheckResult``; it reads the context and returns its
result, and never reaches into the run. The few facts one check hands to a later one
(the logits check found the model ill-conditioned) are fields here, set by the run from
the results.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import onnxruntime
    import torch

    from ..model.record import LoadedModel, ModelRecord
    from ..onnxfile.export import OnnxExport
    from ..options import ParityOptions
    from ..runtime.feeds import TensorFeed
    from ..runtime.runner import RunSettings
    from ..runtime.outputs import OutputLayout
    from ..tolerances import Tolerance


@dataclass
class Inputs:
    """The random batch both sides run: ``x`` is what torch sees, ``raw`` what the file is fed
    (the same array, or uint8 pixels for a file with embedded preprocessing)."""

    x: "np.ndarray"
    raw: Any
    feed: "TensorFeed"
    fixed_batch: int | None = None  # the batch size fixed in a given file


@dataclass
class CheckContext:
    """Everything the checks of one run read."""

    model: "torch.nn.Module"
    record: "ModelRecord"  # what the run knows about the model: spec, data config and source, checkpoint, ...
    export: "OnnxExport"
    options: "ParityOptions"
    session_factory: Callable[[], "onnxruntime.InferenceSession"]
    model_label: str  # the model's name, as the messages name it
    given_file: bool = False  # a file made elsewhere (onnx= or @FILE), not the run's own export
    embedded: bool = False  # the file takes uint8 pixels (embedded preprocessing)
    model_part: Path | None = None  # what the per-layer check reads: the file without embedded preprocessing
    unsimplified: Path | None = None  # a simplifier variant: the export before the simplifier ran
    progress: Callable[[str], None] = field(default=lambda msg: None)
    inputs: Inputs | None = None
    expected: "np.ndarray | None" = None  # torch's outputs on inputs.x, flat (N, D): the logits of a classifier
    actual: "np.ndarray | None" = None  # ONNX Runtime's on inputs.raw, the same way
    layout: "OutputLayout | None" = None  # the kind of output and where each output lies in expected/actual
    inconclusive: bool = False  # the logits check found the model ill-conditioned (float64 arbitration)
    runtime_info: dict[str, Any] | None = None  # what ran the file (runtime.runner.RuntimeInfo.to_dict)
    profile: str | None = None  # the precision judged by: the file's, or a lower one declared for the runtime (bf16)
    precision_note: str | None = None  # the runtime computed lower than asked (checks/runtime_precision.py)

    @property
    def model_config(self) -> dict[str, Any]:
        """The model's own resolved data config (its record's)."""
        return self.record.data_config

    @property
    def loaded(self) -> "LoadedModel":
        """The module with its record, as functions that take either read them."""
        from ..model.record import LoadedModel

        return LoadedModel(self.model, self.record)

    @property
    def random_weights(self) -> bool:
        """Random weights built from a spec: accuracy on labels means nothing."""
        return self.record.random_weights

    @property
    def judged_precision(self) -> str:
        """The precision profile this run is judged by (``tolerances.precision_profile``)."""
        return self.profile or self.options.precision

    @property
    def session(self) -> "onnxruntime.InferenceSession":
        return self.session_factory()

    @property
    def settings(self) -> "RunSettings":
        """Where the file runs in this run: the variant's runtime, provider and optimisation level."""
        from ..runtime.runner import RunSettings

        return RunSettings.of(self.options)

    @property
    def path(self) -> Path:
        return Path(self.export.path)

    @property
    def kind(self) -> str:
        """``logits``, ``embedding`` or ``features`` (:func:`~..runtime.outputs.output_kind`)."""
        return self.layout.kind if self.layout is not None else "logits"

    def logits_tolerance(self, expected: "np.ndarray", *, end_to_end: bool = False) -> "Tolerance":
        """This run's element-wise tolerance for ``expected`` (one output: its own magnitude sets the default):
        :func:`~..tolerances.logits_tolerance` with the run's atol/rtol and the precision it is judged by."""
        from ..tolerances import logits_tolerance

        return logits_tolerance(expected, self.options.atol, self.options.rtol, precision=self.judged_precision,
                                end_to_end=end_to_end)
