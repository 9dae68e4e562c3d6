"""The one table of options: every ``--onnx-parity-<noun>`` option, its ini key, marker keyword and run field.

Each :class:`Option` row is the whole declaration of one option: the command line (``--onnx-parity-<noun>``, and
``onnx-parity check --<noun>``), the ini key (``onnx_parity_<noun>``), the help, the parser, the gate's default
(:class:`~pytest_onnx_parity.settings.Settings`), the :class:`~pytest_onnx_parity.options.ParityOptions` field it
feeds (the default of that field, and how ``check_parity(**options)`` checks a value of it) and whether
``@pytest.mark.onnx_parity(...)`` takes that field. Adding an option is adding a row (and the ``Settings`` and
``ParityOptions`` fields that read their default here; tests/test_option_table.py says which are missing).

A matrix axis (``axis=``) takes a comma list in the gate, parsed by the :mod:`~pytest_onnx_parity.variants`
function the row names (this module sits below variants: settings.py binds it), and one value per run, checked
by ``item``. :data:`RUN_ONLY` names the keywords of one run that no option feeds.

Nothing here imports torch, timm, onnx, onnxruntime or numpy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..axes import (DEFAULT_PREPROCESS, EXPORTERS, LAYER_MODES, ORT_OPT_LEVELS, PRECISIONS, RUNTIMES, SIMPLIFIERS,
                    WEIGHT_KINDS, WEIGHT_SETS)
from ..errors import SpecError
from ..tolerances import MAX_ACCURACY_DROP_PP
from . import values as parse

DEFAULT_MODELS = (
    "resnet18",
    "efficientnet_b0",
    "convnext_atto",
    "vit_small_patch16_224.augreg_in21k_ft_in1k",
)
#: opsets and square image sizes a run takes; the gate's comma lists (variants.parse_opsets/_image_sizes) read these
OPSETS = (7, 30)
IMAGE_SIZES = (8, 4096)


@dataclass(frozen=True)
class Option:
    noun: str  # --onnx-parity-<noun>, ini key onnx_parity_<noun>
    help: str
    parse: Callable[[Any], Any] | None = None  # the option's text (or ini list) -> value; an axis: bound by settings.py
    default: Any = None  # the gate's default (Settings); an axis: a tuple, whose first value a run takes
    ini_type: str = "string"
    metavar: str | None = None
    axis: str | None = None  # a matrix axis: the variants.py function that parses the gate's comma list
    choices: tuple[str, ...] = ()  # an axis of fixed values: the choices (its item check and comma-list parser take them)
    item: Callable[[Any], Any] | None = None  # an axis: one value of one run
    feeds: str | None = None  # the ParityOptions field, where it is not the noun's (providers -> provider)
    gate_only: bool = False  # the gate's alone: feeds no ParityOptions field
    marker: bool = False  # @pytest.mark.onnx_parity takes the field as a keyword
    check: bool = True  # onnx-parity check takes it
    export_only: str | None = None  # onnx-parity check refuses it: why (it shapes an export the gate makes)

    @property
    def attr(self) -> str:
        """The Settings field, and the end of the ini key and the option's dest."""
        return self.noun.replace("-", "_")

    @property
    def field(self) -> str | None:
        """The ParityOptions field this option feeds (None: the gate's alone)."""
        return None if self.gate_only else (self.feeds or self.attr)

    def run_value(self, value: Any) -> Any:
        """One run's value of the field, parsed by the same parser (an axis: its item) as the option's text; a
        ``ValueError`` says what it expected."""
        check = self.item or (parse.choice(*self.choices) if self.choices else self.parse)
        if check is None:
            return value
        try:
            return check(value)
        except (TypeError, AttributeError):  # a parser of text given a number or a path: judged as its text
            return check(str(value))


@dataclass(frozen=True)
class RunOnly:
    """A keyword of one run that no option feeds; its default is the ParityOptions field's own."""

    name: str
    help: str
    marker: bool = False  # @pytest.mark.onnx_parity takes it
    field: bool = True  # a ParityOptions field (``model`` is check_parity's first argument, and the marker's)


def _spec_error_words(fn: Callable[[str], Any]) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        try:
            fn(str(v).strip())
        except SpecError as exc:
            raise ValueError(str(exc)) from None
        return str(v).strip()
    return check


def _provider(v: Any) -> Any:
    from ..runtime.runner import parse_provider

    return _spec_error_words(parse_provider)(v)


def _runtime(v: Any) -> Any:
    from ..runtime.runner import parse_runtime

    return _spec_error_words(parse_runtime)(v)


def _preprocess(v: Any) -> Any:
    if str(v).strip() == DEFAULT_PREPROCESS:
        return DEFAULT_PREPROCESS
    from ..preprocessing.deploy import parse_preprocess

    return _spec_error_words(parse_preprocess)(v)


ROWS: tuple[Option, ...] = (
    Option("models", "Comma-separated model specs NAME[=WEIGHTS] for the gate; shell patterns expand over timm.list_models; "
           "NAME[=WEIGHTS]@FILE.onnx checks that existing file (relative paths resolve against pytest's rootdir) "
           f"(default: {','.join(DEFAULT_MODELS)})", parse.models, DEFAULT_MODELS, "linelist", "A,B", gate_only=True,
           check=False),
    Option("weights", "Default weights of a spec without =WEIGHTS: random or pretrained (default: random)",
           parse.choice(*WEIGHT_KINDS), "random", metavar="random|pretrained", gate_only=True),
    Option("exporter", "torch ONNX exporter(s), a comma list: dynamo, torchscript (default: dynamo)", None, ("dynamo",),
           metavar="dynamo|torchscript", axis="choice_list", choices=EXPORTERS, marker=True,
           export_only="its exporter and opset are what the file says"),
    Option("opset", "ONNX opset(s), a comma list (default: the exporter's own)", None, (), metavar="N", axis="parse_opsets",
           item=parse.int_range(*OPSETS), marker=True, export_only="its exporter and opset are what the file says"),
    Option("precision", "Precision(s) checked, a comma list of fp32, fp16, int8 (default: fp32); fp16/int8 files are "
           "derived from the float32 export", None, ("fp32",), metavar="fp32,fp16,int8", axis="choice_list",
           choices=PRECISIONS),
    Option("ort-opt", "ONNX Runtime graph optimisation level(s), a comma list of " + ", ".join(ORT_OPT_LEVELS) +
           " (default: all, ONNX Runtime's own default)", None, ("all",), metavar="disabled,basic,extended,all",
           axis="choice_list", choices=tuple(ORT_OPT_LEVELS), marker=True),
    Option("providers", "ONNX Runtime execution provider(s), each its own item, options in parentheses "
           "(OpenVINOExecutionProvider(device_type=CPU)); one this build lacks, or that falls back to another, is skipped "
           "(default: CPUExecutionProvider)", None, ("CPUExecutionProvider",), metavar="A,B", axis="parse_providers",
           item=_provider, feeds="provider", marker=True),
    Option("runtime", "Where the file runs, each its own item: " + ", ".join(RUNTIMES) + "; options in parentheses "
           "(openvino(INFERENCE_PRECISION_HINT=f32), onnxruntime-web(numThreads=1)); one not ready here is skipped "
           "naming the install command (onnx-parity runtimes --install NAME), an error when CI is set "
           "(default: onnxruntime)", None, ("onnxruntime",), metavar="A,B", axis="parse_runtimes", item=_runtime,
           marker=True),
    Option("preprocess", "The deployment's own preprocessing, each its own item: module:function, command:CMD "
           "({images}, {output}), tensors:DIR, canvas (default: metadata, the file's own data config through preprocess)",
           None, (DEFAULT_PREPROCESS,), metavar="SPEC", axis="parse_preprocess", item=_preprocess),
    Option("preprocess-max-logit-effect", "--onnx-parity-preprocess: a library difference alone (resize kernel, antialias) "
           "fails when your tensors move the file's logits by more than this many times their RMS against timm's tensors "
           "(default: tolerances.PREPROCESS_MAX_LOGIT_EFFECT)", parse.nonneg_float, None, metavar="X"),
    Option("preprocess-min-top1", "--onnx-parity-preprocess: ... or when top-1 agreement with timm's tensors through the file "
           "falls below this fraction (default: tolerances.PREPROCESS_MIN_TOP1_AGREEMENT)", parse.fraction, None,
           metavar="F"),
    Option("labels", "Class names in index order, one a line (timm's --class-map format), for an image folder whose "
           "sub-folders are named by class name", parse.existing_file, None, metavar="FILE"),
    Option("image-size", "Input size(s) to check, a comma list of pixels (default: the model's own); the export gets "
           "dynamic height and width", None, (), metavar="224,288", axis="parse_image_sizes",
           item=parse.int_range(*IMAGE_SIZES)),
    Option("simplifier", "Simplifier(s) run on the export, each its own item, a comma list of " + ", ".join(SIMPLIFIERS) +
           " (default: none); one not installed is skipped with the pip install that brings it", None, ("none",),
           metavar="none,onnxslim,onnxsim", axis="choice_list", choices=SIMPLIFIERS,
           export_only="simplify it in your pipeline and give the simplified file"),
    # the gate adds the embedded-preprocessing variant; a run's embed_preprocessing is that variant's (RUN_ONLY)
    Option("embed-preprocessing", "Also check the file with timm's eval transform embedded in the graph (uint8 pixels in)",
           parse.boolean, False, "bool", gate_only=True,
           export_only="a file with embedded preprocessing says so in its metadata and is checked so"),
    Option("atol", "Absolute logits tolerance; give with --onnx-parity-rtol (default: 5e-4 x logit RMS for float32)",
           parse.nonneg_float, None, metavar="X"),
    Option("rtol", "Relative logits tolerance; give with --onnx-parity-atol (default: 1e-4 for float32)", parse.nonneg_float, None, metavar="X"),
    Option("seed", "Seed of random weights and batches (default: 0)", parse.int_range(0, 2**32 - 1), 0, metavar="N",
           marker=True),
    Option("images", "Folder of real images, searched recursively; an ImageFolder tree of ImageNet classes also gives "
           "accuracies (default: the bundled sample photos)", parse.image_dir, None, metavar="DIR", marker=True),
    Option("cache-dir", "Where exports are cached (default: onnx-parity in pytest's cache dir)", parse.path, None, metavar="DIR",
           export_only="nothing is exported, so nothing is cached"),
    # a run's use_cache is its opposite (RUN_ONLY)
    Option("no-cache", "Export afresh and keep nothing", parse.boolean, False, "bool", gate_only=True,
           export_only="nothing is exported, so nothing is cached"),
    Option("report", "Write the JSON report to PATH", parse.path, None, metavar="PATH", gate_only=True, check=False),
    Option("layers", "Per-layer comparison: always, on-failure or never (default: always)",
           parse.choice(*LAYER_MODES), "always", metavar="always|on-failure|never"),
    Option("layer-memory", "Memory budget for intermediate tensors of the per-layer comparison (default: 1GiB)", parse.size, None,
           metavar="SIZE"),
    Option("plots", "Write a per-layer error plot (PNG) per model into DIR (needs matplotlib)", parse.path, None, metavar="DIR",
           gate_only=True),
    Option("max-accuracy-drop", "On a labelled image folder, fail when ONNX top-1 is worse than torch by more than this many "
           f"percentage points (default: {MAX_ACCURACY_DROP_PP:g})", parse.nonneg_float, MAX_ACCURACY_DROP_PP, metavar="PP"),
    Option("int8-min-agreement", "int8 files: least top-1 agreement with torch on the real images, a fraction "
           "(default: the int8 profile's 0.85, docs/precision.md)", parse.fraction, None, metavar="F"),
    Option("int8-max-accuracy-drop", "int8 files on a labelled folder: most top-1 accuracy lost against torch, in percentage "
           "points (default: the int8 profile's 10, docs/precision.md)", parse.nonneg_float, None, metavar="PP"),
    Option("test-time", "Use the models' test-time input size and crop (test_input_size, test_crop_pct) where they have them",
           parse.boolean, False, "bool", marker=True),
    Option("shard", "Run only shard K of N of the model list (deterministic, balanced), e.g. 1/4", parse.shard, None, metavar="K/N",
           gate_only=True, check=False),
    Option("output", "Name of the logits (or embedding) output of a file with several outputs, or a comma list naming a "
           "features model's outputs in order (default: chosen by shape and order)",
           parse.name, None, metavar="NAME"),
    Option("data-config", "Data config fields that override the model's own (and a checkpoint's training args), "
           "key=value pairs of Python literals, e.g. mean=(0.5,0.5,0.5),std=(0.5,0.5,0.5),crop_pct=0.95",
           parse.data_config, None, metavar="K=V,...", marker=True),
    Option("weight-set", "Which weights of a timm train.py checkpoint that holds both: ema (its state_dict_ema, as "
           "timm.create_model(checkpoint_path=) loads) or state_dict (default: ema)", parse.choice(*WEIGHT_SETS), "ema",
           metavar="ema|state_dict"),
    Option("artifacts", "Write a reproducer bundle (ONNX file, inputs, outputs, reproduce.py) per failing model into DIR",
           parse.path, None, metavar="DIR", gate_only=True),
    Option("golden", "Golden references in DIR, one file per spec and variant: recorded when missing (check golden skipped, "
           "saying where), else torch's and ONNX Runtime's outputs each compared with theirs", parse.path, None, metavar="DIR"),
    Option("golden-update", "Rewrite the goldens of --onnx-parity-golden (after an intended change)", parse.boolean, False, "bool"),
)

RUN_ONLY: tuple[RunOnly, ...] = (
    RunOnly("model", "the timm model spec, or a module", marker=True, field=False),
    RunOnly("weights", "the spec's weights: random, pretrained or a checkpoint (None: the spec's own, else --onnx-parity-weights)",
            marker=True),
    RunOnly("batch_size", "images per random batch", marker=True),
    RunOnly("model_args", "timm.create_model arguments", marker=True),
    RunOnly("topk", "the k of the top-k agreement"),
    RunOnly("min_agreement", "least top-k agreement on random batches"),
    RunOnly("use_cache", "keep the export in the cache (the gate: not --onnx-parity-no-cache)"),
    RunOnly("real_images", "also compare on real images"),
    RunOnly("embed_preprocessing", "the file embeds timm's eval transform (the gate: the preprocessing=embedded variant)"),
    RunOnly("dynamic_size", "export with dynamic height and width (set by image_size)"),
    RunOnly("rootdir", "where a relative module, command or tensor folder of preprocess resolves (the gate: pytest's rootdir)"),
)


def gate_defaults(rows: tuple[Option, ...] = ROWS) -> dict[str, Any]:
    """Settings field -> the gate's default."""
    return {o.attr: o.default for o in rows}


def run_defaults(rows: tuple[Option, ...] = ROWS) -> dict[str, Any]:
    """ParityOptions field -> its default: the option's, an axis's first value (None when it has none)."""
    return {o.field: (o.default[0] if o.default else None) if o.axis else o.default for o in rows if o.field}


def marker_keywords(rows: tuple[Option, ...] = ROWS) -> frozenset[str]:
    return frozenset([o.field for o in rows if o.marker and o.field] + [k.name for k in RUN_ONLY if k.marker])


def row_of_field(name: str, rows: tuple[Option, ...] = ROWS) -> Option | None:
    return next((o for o in rows if o.field == name), None)


def check_run_value(name: str, value: Any) -> Any:
    """``value`` of ParityOptions field ``name`` as the option feeding it parses it; a :class:`SpecError` names
    the field and the value in the option parser's words."""
    row = row_of_field(name)
    if row is None:
        return value
    try:
        return row.run_value(value)
    except ValueError as exc:
        raise SpecError(f"{name}={value!r}: {exc}") from None
