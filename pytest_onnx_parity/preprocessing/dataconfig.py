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

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple

from ..errors import MissingMetadataError, SpecError
from ..model.record import LoadedModel
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


#: where a model's data config came from, first source first (the JSON entry's ``data_config_source``)
DATA_CONFIG_SOURCES = ("override", "checkpoint_args", "config_json", "pretrained_cfg")
#: how a message names each source (every message that names where a data config came from uses these)
SOURCE_WORDS = {"override": "the data config overrides", "checkpoint_args": "the checkpoint's training args",
                "config_json": "the model's config.json", "pretrained_cfg": "timm's pretrained config of the name"}
#: the sources in order, for a message about a file that cannot know which one its model uses
SOURCES_IN_ORDER = ("the first of: data config overrides, a timm train.py checkpoint's training args, a "
                    "local-dir:/hf-hub: config.json, timm's pretrained config of the name")


def source_words(source: str | None) -> str:
    """How a message names where a data config came from (:data:`SOURCE_WORDS`)."""
    return SOURCE_WORDS.get(str(source), "the model")
#: the fields an override may set: the six, and ``img_size`` (timm's train.py argument)
OVERRIDE_FIELDS = DATA_CONFIG_FIELDS + ("img_size",)
#: the fields of a timm train.py checkpoint's ``args`` that make up a data config
TRAIN_ARG_FIELDS = ("input_size", "img_size", "in_chans", "mean", "std", "crop_pct", "crop_mode", "interpolation")


def resolve_data_config(model: "torch.nn.Module | str", *, model_args: Mapping[str, Any] | None = None,
                        data_config: Mapping[str, Any] | None = None, use_ema: bool = True) -> dict[str, Any]:
    """The model's own eval data config, resolved the way timm resolves it.

    ``model`` is a timm module, a :class:`~..model.record.LoadedModel` or a spec string. A module gets
    timm's resolution of its ``pretrained_cfg`` (:func:`~pytest_onnx_parity.load_model` writes the config it
    resolved there); a LoadedModel, its record's config. A spec gives, from the first source that has it
    (:data:`DATA_CONFIG_SOURCES`): ``data_config`` overrides, the checkpoint's training args
    (a timm ``train.py`` checkpoint's ``args``), a ``local-dir:``/``hf-hub:`` config.json,
    the name's pretrained config; the model's input arguments (``in_chans``, ``img_size``
    in ``NAME(ARGS)`` or ``model_args``) set its input size. No weights are downloaded and
    no model is built. Test-time settings (``test_input_size``, ``test_crop_pct``) of the
    pretrained config are kept beside the six fields when nothing changed the size or crop.
    """
    if isinstance(model, (str, ModelSpec)):
        return spec_data_config(model, model_args=model_args, overrides=data_config, use_ema=use_ema)[0]
    if isinstance(model, LoadedModel):
        config = model.record.data_config
        return dict(config) if not data_config else override_config(config, data_config)
    pretrained_cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    return compose_data_config(pretrained_cfg, model_args=module_input_args(model), overrides=data_config)[0]


def module_input_args(model: Any) -> dict[str, Any]:
    """The input arguments a module was built with, read from the module: ``in_chans`` (its first conv, as
    its pretrained config names it) and a fixed ``img_size`` (a ViT's patch embedding), where they differ
    from its pretrained config's input size."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    c, *hw = cfg.get("input_size") or (3, 224, 224)
    out: dict[str, Any] = {}
    first = cfg.get("first_conv")
    try:
        conv = model.get_submodule(first) if isinstance(first, str) and first else None
    except AttributeError:
        conv = None
    in_chans = getattr(conv, "in_channels", None)
    if isinstance(in_chans, int) and in_chans != c:
        out["in_chans"] = in_chans
    embed = getattr(model, "patch_embed", None)
    size = getattr(embed, "img_size", None)
    if size is not None and not getattr(embed, "dynamic_img_size", False) and tuple(size) != tuple(hw):
        out["img_size"] = tuple(int(v) for v in size)
    return out


def override_config(config: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with ``overrides`` (checked: :func:`check_overrides`) on top; test-time fields dropped."""
    out, overrides = dict(config), dict(check_overrides(overrides))
    size = overrides.pop("img_size", None)
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        out["input_size"] = [out["input_size"][0], int(h), int(w)]
    out.update(overrides)
    for key in TEST_TIME_FIELDS:
        out.pop(key, None)
    return normalize_data_config(out)


def data_config_source(model: Any) -> str:
    """Where a model's data config came from (:data:`DATA_CONFIG_SOURCES`): a LoadedModel's record says; a
    module alone, its ``pretrained_cfg``."""
    return model.record.data_config_source if isinstance(model, LoadedModel) else "pretrained_cfg"


def spec_data_config(spec: Any, *, model_args: Mapping[str, Any] | None = None,
                     overrides: Mapping[str, Any] | None = None, use_ema: bool = True) -> tuple[dict[str, Any], str]:
    """``(config, source)`` of a spec (see :func:`resolve_data_config`); :func:`load_model` follows the same
    rule, from the same :func:`spec_inputs`."""
    from ..specs import check_model_name, parse_spec, with_model_args

    spec = with_model_args(parse_spec(spec) if isinstance(spec, str) else spec, dict(model_args or {}))
    check_model_name(spec.name)
    inputs = spec_inputs(spec, use_ema=use_ema)
    return inputs.data_config(overrides)


class SpecInputs(NamedTuple):
    """What a spec builds from: its model arguments (with the head and stem read from its checkpoint), the
    name's pretrained config and where that came from, and the checkpoint (None for random or pretrained)."""

    args: dict[str, Any]
    pretrained_cfg: dict[str, Any]
    base_source: str
    checkpoint: Any = None  # model.checkpoint.Checkpoint

    def data_config(self, overrides: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], str]:
        train_args = self.checkpoint.train_args if self.checkpoint is not None else None
        return compose_data_config(self.pretrained_cfg, model_args=self.args, train_args=train_args,
                                   overrides=overrides, base_source=self.base_source)


def spec_inputs(spec: ModelSpec, *, use_ema: bool = True) -> SpecInputs:
    """:class:`SpecInputs` of a parsed spec whose name is known: its checkpoint read once (checked first, with
    the gate's words), ``num_classes``/``in_chans`` not given taken from it."""
    args = spec.kwargs
    pretrained_cfg, base = pretrained_config(spec.name, args)
    if spec.weights_kind != "file":
        return SpecInputs(args, pretrained_cfg, base)
    from ..model.checkpoint import infer_model_args, read_checkpoint
    from ..specs import check_checkpoint

    check_checkpoint(spec)  # missing or damaged: the same words as the gate's up-front check
    ckpt = read_checkpoint(spec, use_ema=use_ema)
    return SpecInputs({**infer_model_args(ckpt.state_dict, pretrained_cfg, args), **args}, pretrained_cfg, base, ckpt)


def pretrained_config(name: str, model_args: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """``(pretrained_cfg, source)`` of a model name without its weights: a ``local-dir:`` or ``hf-hub:``
    config.json (``config_json``), else timm's registered config of the name (``pretrained_cfg``; an
    architecture without one: the config of the model built on the meta device)."""
    import timm.models

    if name.startswith("local-dir:"):
        from ..model.privates import config_from_folder

        folder = Path(name[len("local-dir:"):]).expanduser()
        try:
            cfg = config_from_folder(folder)
        except FileNotFoundError:
            raise SpecError(f"{name}: no config.json in {folder}; a local-dir: folder holds config.json and the weights "
                            "as timm's save_for_hf / push_to_hf_hub write them") from None
        return dict(cfg), "config_json"
    if name.startswith("hf-hub:"):
        from ..model.hub import load_pretrained
        from ..model.privates import config_from_hub

        try:
            cfg = load_pretrained(lambda: config_from_hub(name[len("hf-hub:"):]), name)
        except Exception as exc:  # noqa: BLE001 - offline, unknown repo, no config.json: hub errors come in many types
            from ..model.hub import hub_error

            raise hub_error(name, "the config.json", exc) from None
        return dict(cfg), "config_json"
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is not None:
        return cfg.to_dict(), "pretrained_cfg"
    import torch

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, **dict(model_args or {}))
    return dict(getattr(model, "pretrained_cfg", None) or {}), "pretrained_cfg"


def compose_data_config(pretrained_cfg: Mapping[str, Any], *, model_args: Mapping[str, Any] | None = None,
                        train_args: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None,
                        base_source: str = "pretrained_cfg") -> tuple[dict[str, Any], str]:
    """``(config, source)``: timm's ``resolve_data_config`` of ``pretrained_cfg`` with, in rising priority,
    the model's input arguments, a checkpoint's training args and explicit overrides.

    A model of C != 3 channels with a 3-value mean or std from its pretrained config gets their average,
    C times (timm's train.py wants a mean per channel; it broadcasts a single one the same way).
    """
    import timm.data

    args: dict[str, Any] = {}
    model_args = dict(model_args or {})
    if model_args.get("in_chans") is not None:
        args["in_chans"] = int(model_args["in_chans"])
    _put_size(args, model_args.get("img_size"))
    source = base_source
    picked = {k: v for k, v in (train_args or {}).items() if k in TRAIN_ARG_FIELDS and v not in (None, "", [], ())}
    if picked:
        _put_size(args, picked.pop("img_size", None))
        args.update(picked)
        source = "checkpoint_args"
    if overrides:
        overrides = dict(overrides)
        _put_size(args, overrides.pop("img_size", None))
        args.update(overrides)
        source = "override"
    try:
        config = dict(timm.data.resolve_data_config(args=args, pretrained_cfg=dict(pretrained_cfg)))
    except AssertionError:
        raise SpecError(f"data config {args}: mean and std need one value or one per channel "
                        f"({args.get('in_chans', 3)} channels)") from None
    if "in_chans" in args and "input_size" not in args:  # timm takes the pretrained size's channels otherwise
        config["input_size"] = (int(args["in_chans"]), *config["input_size"][1:])
    c = int(config["input_size"][0])
    for key in ("mean", "std"):
        values = [float(v) for v in config[key]]
        if len(values) != c:
            values = [sum(values) / len(values)] * c
        config[key] = values
    # timm's test-time size and crop belong to the pretrained input: kept only while the input is that one
    changed = (tuple(config["input_size"]) != tuple(pretrained_cfg.get("input_size") or ())
               or float(config["crop_pct"]) != float(pretrained_cfg.get("crop_pct") or 0.0))
    for key in TEST_TIME_FIELDS:
        if pretrained_cfg.get(key) is not None and not changed:
            config[key] = pretrained_cfg[key]
    return normalize_data_config(config), source


def _put_size(args: dict[str, Any], size: Any) -> None:
    """``img_size`` (an int, or (h, w)) as timm's train.py arguments hold it."""
    if size is None:
        return
    if isinstance(size, (list, tuple)):
        h, w = (int(size[0]), int(size[-1]))
        args.pop("img_size", None)
        args["input_size"] = (int(args.get("in_chans", 3)), h, w)
    else:
        args.pop("input_size", None)
        args["img_size"] = int(size)


def check_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Data config overrides (``data_config=``, ``--onnx-parity-data-config``), checked: known fields with
    values of the right kind. Raises :class:`SpecError` naming the field and the fix."""
    if not isinstance(overrides, Mapping):
        raise SpecError(f"data_config={overrides!r}: give a dict of fields, e.g. {{'mean': (0.5, 0.5, 0.5)}}")
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in OVERRIDE_FIELDS:
            raise SpecError(f"data config override {key!r} is not a data config field; known: {', '.join(OVERRIDE_FIELDS)}")
        ok = {"input_size": lambda v: isinstance(v, (list, tuple)) and len(v) == 3,
              "img_size": lambda v: isinstance(v, int) or (isinstance(v, (list, tuple)) and len(v) == 2),
              "mean": lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) for x in v),
              "crop_pct": lambda v: isinstance(v, (int, float)) and 0 < v <= 2,
              "interpolation": lambda v: isinstance(v, str), "crop_mode": lambda v: v in ("center", "squash", "border"),
              }.get("mean" if key == "std" else key, lambda v: True)
        if not ok(value):
            raise SpecError(f"data config override {key}={value!r} is not valid; e.g. input_size=(3,224,224), "
                            "img_size=160, mean=(0.5,0.5,0.5), std=(0.5,0.5,0.5), crop_pct=0.95, "
                            "interpolation='bilinear', crop_mode='center'")
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


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
