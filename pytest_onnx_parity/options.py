"""The options of one parity run, validated once.

A field that an option of the table feeds (:mod:`.specs.optiontable`) takes its default there and is checked by
that option's parser; the others are the run's alone (``optiontable.RUN_ONLY``) and declare their default here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import SpecError
from .runtime.forward import DEFAULT_BATCH
from .specs.optiontable import check_run_value, run_defaults
from .tolerances import check_pair

_D = run_defaults()


@dataclass
class ParityOptions:
    exporter: str = _D["exporter"]
    opset: int | None = _D["opset"]
    weights: str | None = None
    seed: int = _D["seed"]
    atol: float | None = _D["atol"]
    rtol: float | None = _D["rtol"]
    batch_size: int = DEFAULT_BATCH
    topk: int = 5
    min_agreement: float = 1.0
    cache_dir: str | None = _D["cache_dir"]
    use_cache: bool = True
    images: str | None = _D["images"]  # folder of real images; None: the bundled photos
    real_images: bool = True
    layers: str = _D["layers"]
    layer_memory: int | None = _D["layer_memory"]
    test_time: bool = _D["test_time"]
    max_accuracy_drop: float = _D["max_accuracy_drop"]
    int8_min_agreement: float | None = _D["int8_min_agreement"]  # None: the int8 profile's (tolerances.PRECISION_PROFILES)
    int8_max_accuracy_drop: float | None = _D["int8_max_accuracy_drop"]
    output: str | None = _D["output"]  # the logits output of a file with several (None: chosen by shape)
    # the model (model/build.py): timm.create_model arguments, data config overrides, a checkpoint's weight set
    model_args: dict[str, Any] | None = None
    data_config: dict[str, Any] | None = _D["data_config"]
    weight_set: str = _D["weight_set"]  # a train.py checkpoint holding both: ema or state_dict (axes.WEIGHT_SETS)
    # the deployment matrix (variants.py, axes.py): one value of each axis per run
    precision: str = _D["precision"]
    ort_opt: str = _D["ort_opt"]
    provider: str = _D["provider"]
    image_size: int | None = _D["image_size"]  # None: the model's own
    embed_preprocessing: bool = False
    simplifier: str = _D["simplifier"]  # axes.SIMPLIFIERS: the export as it is, or simplified
    dynamic_size: bool = False  # export with dynamic height and width (sizes other than the model's own)
    golden: str | None = _D["golden"]  # folder of golden references (checks/golden.py); None: no golden check
    golden_update: bool = _D["golden_update"]  # rewrite the goldens of that folder
    runtime: str = _D["runtime"]  # where the file runs, with options: openvino(INFERENCE_PRECISION_HINT=f32) (axes.RUNTIMES)
    preprocess: str = _D["preprocess"]  # the deployment's preprocessing: metadata (the file's own), module:function, command:...
    labels: str | None = _D["labels"]  # class names in index order, one a line, for a folder of class-named sub-folders
    preprocess_max_logit_effect: float | None = _D["preprocess_max_logit_effect"]  # None: tolerances.PREPROCESS_MAX_LOGIT_EFFECT
    preprocess_min_top1: float | None = _D["preprocess_min_top1"]  # None: tolerances.PREPROCESS_MIN_TOP1_AGREEMENT
    rootdir: str | None = None  # where a relative module, command or tensor folder of ``preprocess`` resolves

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "ParityOptions":
        """The options of ``check_parity(**kwargs)``: None is a field's default; each value an option feeds is parsed
        by that option's parser (an axis: one value), so a bad one is refused in the command line's words."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise SpecError(f"unknown parity option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        opts = cls(**{k: check_run_value(k, v) for k, v in kwargs.items() if v is not None})
        check_pair(opts.atol, opts.rtol)
        if opts.image_size is not None:
            opts.dynamic_size = True
        if opts.golden_update and not opts.golden:
            raise SpecError("golden_update=True rewrites the goldens of a folder: give golden=DIR too")
        return opts
