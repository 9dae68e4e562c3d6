"""The model's data config, and how it travels inside an ONNX file.

ONNX files carry no preprocessing. The plugin writes the model's own data config
(input size, interpolation, mean, std, crop_pct, crop_mode) as JSON into the file's
``metadata_props`` so a deployment, and this plugin, can read it back.

Metadata keys (all values are JSON strings):

``onnx_parity.data_config``
    ``{"input_size": [3, 224, 224], "interpolation": "bicubic", "mean": [...],
    "std": [...], "crop_pct": 0.9, "crop_mode": "center"}`` and, when timm's
    pretrained config has them, ``test_input_size`` and ``test_crop_pct``.
``onnx_parity.provenance``
    model name, weights identity, seed, exporter, opset and library versions.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from ..errors import MissingMetadataError
from ..specs import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch

DATA_CONFIG_FIELDS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
TEST_TIME_FIELDS = ("test_input_size", "test_crop_pct")


def normalize_data_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``config`` with JSON-friendly types: tuples become lists, numbers floats/ints."""
    out: dict[str, Any] = {}
    for key in DATA_CONFIG_FIELDS + TEST_TIME_FIELDS:
        if key not in config or config[key] is None:
            continue
        value = config[key]
        if key in ("input_size", "test_input_size"):
            value = [int(v) for v in value]
        elif key in ("mean", "std"):
            value = [float(v) for v in value]
        elif key in ("crop_pct", "test_crop_pct"):
            value = float(value)
        else:
            value = str(value)
        out[key] = value
    missing = [k for k in DATA_CONFIG_FIELDS if k not in out]
    if missing:
        raise MissingMetadataError(f"data config lacks {', '.join(missing)}: got keys {sorted(config)}")
    return out


def resolve_data_config(model: "torch.nn.Module | str") -> dict[str, Any]:
    """The model's own eval data config, resolved the way timm resolves it.

    ``model`` is a timm module or a spec string: a pretrained name
    (``vit_small_patch16_224.augreg_in21k_ft_in1k``) gives that name's pretrained
    config, an architecture its default tag's; no weights are downloaded, and the
    ``=WEIGHTS``/``@FILE`` parts of a spec do not change the config (it always comes
    from the model's own pretrained config). Test-time settings (``test_input_size``,
    ``test_crop_pct``) of the pretrained config are kept beside the six fields.
    """
    import timm.data

    if isinstance(model, (str, ModelSpec)):
        return _spec_data_config(model)  # type: ignore[arg-type]
    config = dict(timm.data.resolve_model_data_config(model))
    pretrained_cfg = getattr(model, "pretrained_cfg", None) or {}
    for key in TEST_TIME_FIELDS:
        if pretrained_cfg.get(key) is not None:
            config[key] = pretrained_cfg[key]
    return normalize_data_config(config)


def _spec_data_config(spec: Any) -> dict[str, Any]:
    """The data config of a spec's NAME, from timm's pretrained config (no weights, no download)."""
    import timm.data
    import timm.models

    from ..specs import check_model_name, parse_spec

    name = parse_spec(spec).name if isinstance(spec, str) else spec.name
    check_model_name(name)
    cfg = None if name.startswith(("hf-hub:", "local-dir:")) else timm.models.get_pretrained_cfg(name)
    if cfg is None:  # hub configs live with the model: build it (pretrained=False keeps pretrained_cfg)
        import timm

        return resolve_data_config(timm.create_model(name, pretrained=False))
    pretrained_cfg = cfg.to_dict()
    config = dict(timm.data.resolve_data_config(pretrained_cfg=pretrained_cfg))
    for key in TEST_TIME_FIELDS:
        if pretrained_cfg.get(key) is not None:
            config[key] = pretrained_cfg[key]
    return normalize_data_config(config)


def apply_test_time(config: Mapping[str, Any]) -> dict[str, Any]:
    """The six fields with timm's test-time input size and crop where the config has them."""
    out = {k: config[k] for k in DATA_CONFIG_FIELDS}
    if config.get("test_input_size"):
        out["input_size"] = list(config["test_input_size"])
    if config.get("test_crop_pct"):
        out["crop_pct"] = float(config["test_crop_pct"])
    return out


def sized_config(config: Mapping[str, Any], image_size: int | None) -> dict[str, Any]:
    """``config`` with its input size replaced by ``image_size`` (square; None: unchanged), the rest kept:
    how a model is checked at another size than its own (resize by crop_pct, then crop to that size)."""
    if image_size is None:
        return dict(config)
    return {**config, "input_size": [config["input_size"][0], int(image_size), int(image_size)]}


def diff_data_configs(expected: Mapping[str, Any], actual: Mapping[str, Any], *, tol: float = 1e-6) -> list[str]:
    """Fields in which two data configs differ, each as ``"field: expected X, file has Y"``."""
    out = []
    for key in DATA_CONFIG_FIELDS:
        e, a = expected.get(key), actual.get(key)
        if _same(e, a, tol):
            continue
        out.append(f"{key}: model wants {_fmt(e)}, file has {_fmt(a)}")
    return out


def _same(e: Any, a: Any, tol: float) -> bool:
    if isinstance(e, (list, tuple)) and isinstance(a, (list, tuple)):
        return len(e) == len(a) and all(_same(x, y, tol) for x, y in zip(e, a))
    if isinstance(e, (int, float)) and isinstance(a, (int, float)):
        return abs(float(e) - float(a)) <= tol
    return e == a


def _fmt(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_fmt(x) for x in v) + ")"
    if isinstance(v, float):
        return f"{v:g}"
    return repr(v) if isinstance(v, str) else str(v)
