"""The ``data_config`` check: the config the file carries equals the model's own.

Each differing field is named with both values; a file without a config is told how to
stamp it (a deployment that reads no config has to guess mean, std, crop and interpolation).
"""
from __future__ import annotations

from typing import Any

from ..errors import MissingMetadataError
from ..results import CheckResult
from .context import CheckContext


def check(ctx: CheckContext) -> CheckResult:
    from ..onnxfile.metadata import read_data_config
    from ..preprocessing.dataconfig import diff_data_configs, source_words

    model_cfg = ctx.model_config
    source = ctx.record.data_config_source
    stamp_ref = stamp_model(ctx)
    try:
        file_cfg = read_data_config(ctx.path)
    except MissingMetadataError as exc:
        return CheckResult(
            "data_config", "failed",
            f"{exc}\nThis model's data config comes from {source_words(source)}; stamp it: "
            f"onnx-parity stamp {ctx.path} --model {stamp_ref}\n"
            "Without it a deployment has to guess mean, std, crop and interpolation "
            f"(this model wants {brief(model_cfg)}).", {"model": model_cfg, "file": None})
    diffs = diff_data_configs(model_cfg, file_cfg)
    if diffs:
        fields = ", ".join(d.split(":")[0] for d in diffs)
        msg = (f"The ONNX file's data config differs from the model's own (from {source_words(source)}) in {fields}, "
               "so a deployment that reads it preprocesses differently from training.\n  " + "\n  ".join(diffs) +
               "\nRe-export with pytest_onnx_parity.export_onnx, or write the model's own config into the file: "
               f"onnx-parity stamp {ctx.path} --model {stamp_ref} (pytest_onnx_parity.stamp_onnx).")
        return CheckResult("data_config", "failed", msg,
                           {"differs": [d.split(":")[0] for d in diffs], "model": model_cfg, "file": file_cfg,
                            "source": source})
    return CheckResult("data_config", "passed",
                       f"data config in the file equals the model's (from {source_words(source)})",
                       {"model": model_cfg, "source": source})


def stamp_model(ctx: CheckContext) -> str:
    """The ``--model`` that stamps the model's own config: its name and arguments, with its checkpoint when
    the config came from the checkpoint's training args."""
    spec = ctx.record.spec
    if spec is None:
        return ctx.model_label
    weights = f"={spec.weights}" if spec.weights_kind == "file" else ""
    return f"'{spec.label}{weights}'" if "(" in spec.label else f"{spec.label}{weights}"


def brief(cfg: dict[str, Any]) -> str:
    return (f"input {tuple(cfg['input_size'])}, mean {tuple(cfg['mean'])}, std {tuple(cfg['std'])}, "
            f"crop_pct {cfg['crop_pct']}, {cfg['interpolation']}, crop_mode {cfg['crop_mode']}")
