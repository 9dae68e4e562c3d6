"""What the package learns about a model while building it: a typed record handed down through a run.

:func:`~.build.load_model_record` returns a :class:`LoadedModel`, the module and its
:class:`ModelRecord`: the spec it was built from (arguments included), the seed of random weights,
the checkpoint and the weight set read from it, the keys it dropped, how random weights were
calibrated, and the data config with its source. The run, the checks, the export, the golden and the
bundle read these from the record; nothing is written on the module under a name of this package.

The module itself carries what timm's own fields hold: :func:`~.build.load_model` writes the resolved
data config into ``module.pretrained_cfg`` (as ``timm.create_model(pretrained_cfg_overlay=...)``
does), so ``timm.data.resolve_data_config(model=module)`` and
:func:`~pytest_onnx_parity.resolve_data_config` give the config the record holds. Where it came from
(``checkpoint_args``, ``config_json``, ...) is known to the record only: a module alone says
``pretrained_cfg``.

A module built elsewhere gets a record from :func:`~.build.record_of` (its ``pretrained_cfg``, or the
overrides given with it); the module is never changed. This module imports nothing of the package, so every
room can name these types.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..specs import ModelSpec
    from .checkpoint import Checkpoint

#: the record's calibration of random weights: BatchNorm statistics from noise and the bundled photos
CALIBRATED_ON_PHOTOS = "noise and photos"


@dataclass(frozen=True)
class ModelRecord:
    """What a run knows about its model, besides the module (see the module docstring)."""

    data_config: dict[str, Any]
    data_config_source: str = "pretrained_cfg"  # preprocessing.dataconfig.DATA_CONFIG_SOURCES
    spec: "ModelSpec | None" = None  # None: a module built elsewhere
    seed: int = 0
    checkpoint: "Checkpoint | None" = None  # a local checkpoint's weights and weight set
    dropped_keys: tuple[str, ...] = ()  # checkpoint keys the model has no place for (a classifier cut off)
    calibration: str | None = None  # random weights: how BatchNorm was calibrated (model/build.py)

    @property
    def random_weights(self) -> bool:
        return self.spec is not None and self.spec.weights_kind == "random"

    @property
    def weights(self) -> str | None:
        """The weights as the spec names them (``random``, ``pretrained``, a path); None for a given module."""
        return self.spec.weights if self.spec is not None else None


@dataclass(frozen=True)
class LoadedModel:
    """A module and its record, as :func:`~.build.load_model_record` builds them."""

    module: "torch.nn.Module"
    record: ModelRecord

