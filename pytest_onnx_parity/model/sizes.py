"""Models at other input sizes: built to take them where timm can, and checked to take them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..axes import use_ema
from ..errors import OnnxParityError, VariantSkip
from ..specs import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..options import ParityOptions
    from .record import LoadedModel


def native_size(config: dict[str, Any]) -> int | list[int]:
    h, w = config["input_size"][1:]
    return int(h) if h == w else [int(h), int(w)]


def load_sized_model(spec: Any, *, weights: str | None, seed: int, **build: Any) -> "LoadedModel":
    """The model built to take other input sizes: ``dynamic_img_size=True`` where timm's constructor
    has it (ViTs and kin; the weights are the same), the plain model otherwise (CNNs)."""
    from .build import load_model_record

    try:
        return load_model_record(spec, weights, seed=seed, dynamic_img_size=True, **build)
    except OnnxParityError as exc:  # SpecError, WeightsError: the constructor has no such argument
        if "dynamic_img_size" not in str(exc):
            raise
    return load_model_record(spec, weights, seed=seed, **build)


def check_size(model: "torch.nn.Module", config: dict[str, Any], image_size: int | None) -> None:
    """Raise :class:`VariantSkip` when the torch model itself cannot take ``image_size``."""
    if image_size is None:
        return
    import torch

    c = config["input_size"][0]
    try:
        with torch.no_grad():
            model(torch.zeros(1, c, image_size, image_size))
    except Exception as exc:  # noqa: BLE001 - any failure of the model itself means "cannot take it"
        reason = " ".join(str(exc).split())[:300]
        raise VariantSkip(f"the torch model cannot take {image_size}x{image_size} images ({type(exc).__name__}: "
                          f"{reason}); check sizes this architecture accepts (e.g. a multiple of its patch size "
                          "or stride)") from None


def build_model(model_arg: Any, options: "ParityOptions") -> "LoadedModel":
    """The torch model of a run with image sizes, with its record: a spec built by :func:`load_sized_model`, a
    module as given."""
    if isinstance(model_arg, (str, ModelSpec)):
        return load_sized_model(model_arg, weights=options.weights, seed=options.seed, model_args=options.model_args,
                                data_config=options.data_config, use_ema=use_ema(options.weight_set))
    from ..onnxfile.export import resolve_model

    return resolve_model(model_arg, data_config=options.data_config)
