"""The options of one parity run, validated once."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .axes import LAYER_MODES, ORT_OPT_LEVELS, PRECISIONS, SIMPLIFIERS, WEIGHT_SETS
from .errors import SpecError
from .runtime.forward import DEFAULT_BATCH
from .tolerances import MAX_ACCURACY_DROP_PP, check_pair


@dataclass
class ParityOptions:
    exporter: str = "dynamo"
    opset: int | None = None
    weights: str | None = None
    seed: int = 0
    atol: float | None = None
    rtol: float | None = None
    batch_size: int = DEFAULT_BATCH
    topk: int = 5
    min_agreement: float = 1.0
    cache_dir: str | None = None
    use_cache: bool = True
    images: str | None = None  # folder of real images; None: the bundled photos
    real_images: bool = True
    layers: str = "always"
    layer_memory: int | None = None
    test_time: bool = False
    max_accuracy_drop: float = MAX_ACCURACY_DROP_PP
    int8_min_agreement: float | None = None  # None: the int8 profile's (tolerances.PRECISION_PROFILES)
    int8_max_accuracy_drop: float | None = None
    output: str | None = None  # the logits output of a file with several (None: chosen by shape)
    # the model (model/build.py): timm.create_model arguments, data config overrides, a checkpoint's weight set
    model_args: dict[str, Any] | None = None
    data_config: dict[str, Any] | None = None
    weight_set: str = "ema"  # a train.py checkpoint holding both: ema or state_dict (axes.WEIGHT_SETS)
    # the deployment matrix (variants.py, axes.py): one value of each axis per run
    precision: str = "fp32"
    ort_opt: str = "all"
    provider: str = "CPUExecutionProvider"
    image_size: int | None = None  # None: the model's own
    embed_preprocessing: bool = False
    simplifier: str = "none"  # axes.SIMPLIFIERS: the export as it is, or simplified
    dynamic_size: bool = False  # export with dynamic height and width (sizes other than the model's own)
    golden: str | None = None  # folder of golden references (checks/golden.py); None: no golden check
    golden_update: bool = False  # rewrite the goldens of that folder
    runtime: str = "onnxruntime"  # where the file runs, with options: openvino(INFERENCE_PRECISION_HINT=f32) (axes.RUNTIMES)
    preprocess: str = "metadata"  # the deployment's preprocessing: metadata (the file's own), module:function, command:...
    labels: str | None = None  # class names in index order, one a line, for a folder of class-named sub-folders
    preprocess_max_logit_effect: float | None = None  # None: tolerances.PREPROCESS_MAX_LOGIT_EFFECT
    preprocess_min_top1: float | None = None  # None: tolerances.PREPROCESS_MIN_TOP1_AGREEMENT
    rootdir: str | None = None  # where a relative module, command or tensor folder of ``preprocess`` resolves

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "ParityOptions":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise SpecError(f"unknown parity option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        opts = cls(**{k: v for k, v in kwargs.items() if v is not None or k in ("opset", "atol", "rtol", "weights", "images", "cache_dir", "layer_memory", "output", "image_size",
                                                                                   "model_args", "data_config", "labels", "rootdir",
                                                                                   "preprocess_max_logit_effect", "preprocess_min_top1")})
        if opts.layers not in LAYER_MODES:
            raise SpecError(f"layers={opts.layers!r}: choose one of {', '.join(LAYER_MODES)}")
        check_pair(opts.atol, opts.rtol)
        if opts.precision not in PRECISIONS:
            raise SpecError(f"precision={opts.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if opts.simplifier not in SIMPLIFIERS:
            raise SpecError(f"simplifier={opts.simplifier!r}: choose one of {', '.join(SIMPLIFIERS)}")
        if opts.ort_opt not in ORT_OPT_LEVELS:
            raise SpecError(f"ort_opt={opts.ort_opt!r}: choose one of {', '.join(ORT_OPT_LEVELS)}")
        if opts.weight_set not in WEIGHT_SETS:
            raise SpecError(f"weight_set={opts.weight_set!r}: choose one of {', '.join(WEIGHT_SETS)}")
        if opts.data_config is not None:
            from .preprocessing.dataconfig import check_overrides

            opts.data_config = check_overrides(opts.data_config)
        if opts.image_size is not None:
            opts.dynamic_size = True
        from .runtime.runner import parse_provider, parse_runtime

        parse_runtime(opts.runtime)  # SpecError naming the value: one value per run (a comma list is a gate axis)
        parse_provider(opts.provider)
        if opts.preprocess != "metadata":
            from .preprocessing.deploy import parse_preprocess

            parse_preprocess(opts.preprocess)
        if opts.golden_update and not opts.golden:
            raise SpecError("golden_update=True rewrites the goldens of a folder: give golden=DIR too")
        return opts
