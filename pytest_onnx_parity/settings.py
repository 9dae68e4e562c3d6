"""Gate settings: CLI options and ini keys resolved once into a frozen object.

Every tunable has ``--onnx-parity-<noun>`` and ini key ``onnx_parity_<noun>``; the
command line wins. Values are validated here, without importing torch or timm; a
bad value is a ``pytest.UsageError`` (exit code 4) naming the option and value.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from .axes import RUNTIMES, EXPORTERS, LAYER_MODES, ORT_OPT_LEVELS, PRECISIONS, SIMPLIFIERS, WEIGHT_KINDS, WEIGHT_SETS
from .specs import values as parse
from .tolerances import MAX_ACCURACY_DROP_PP

DEFAULT_MODELS = (
    "resnet18",
    "efficientnet_b0",
    "convnext_atto",
    "vit_small_patch16_224.augreg_in21k_ft_in1k",
)


@dataclass(frozen=True)
class Option:
    noun: str
    help: str
    parse: Callable[[str], Any]
    default: Any = None
    ini_type: str = "string"
    metavar: str | None = None


def _axis(name: str, *args: Any) -> Callable[[Any], Any]:
    """A comma list of one matrix axis, parsed by :mod:`.variants` (imported when used)."""
    def parse(v: Any) -> Any:
        from . import variants as matrix

        fn = getattr(matrix, name)
        return fn(*args)(v) if args else fn(v)
    return parse


OPTIONS: tuple[Option, ...] = (
    Option("models", "Comma-separated model specs NAME[=WEIGHTS] for the gate; shell patterns expand over timm.list_models; "
           "NAME[=WEIGHTS]@FILE.onnx checks that existing file (relative paths resolve against pytest's rootdir) "
           f"(default: {','.join(DEFAULT_MODELS)})", parse.models, None, "linelist", "A,B"),
    Option("weights", "Default weights of a spec without =WEIGHTS: random or pretrained (default: random)",
           parse.choice(*WEIGHT_KINDS), "random", metavar="random|pretrained"),
    Option("exporter", "torch ONNX exporter(s), a comma list: dynamo, torchscript (default: dynamo)",
           _axis("choice_list", *EXPORTERS), ("dynamo",), metavar="dynamo|torchscript"),
    Option("opset", "ONNX opset(s), a comma list (default: the exporter's own)", _axis("parse_opsets"), (), metavar="N"),
    Option("precision", "Precision(s) checked, a comma list of fp32, fp16, int8 (default: fp32); fp16/int8 files are "
           "derived from the float32 export", _axis("choice_list", *PRECISIONS), ("fp32",),
           metavar="fp32,fp16,int8"),
    Option("ort-opt", "ONNX Runtime graph optimisation level(s), a comma list of " + ", ".join(ORT_OPT_LEVELS) +
           " (default: all, ONNX Runtime's own default)", _axis("choice_list", *ORT_OPT_LEVELS), ("all",),
           metavar="disabled,basic,extended,all"),
    Option("providers", "ONNX Runtime execution provider(s), each its own item, options in parentheses "
           "(OpenVINOExecutionProvider(device_type=CPU)); one this build lacks, or that falls back to another, is skipped "
           "(default: CPUExecutionProvider)", _axis("parse_providers"), ("CPUExecutionProvider",), metavar="A,B"),
    Option("runtime", "Where the file runs, each its own item: " + ", ".join(RUNTIMES) + "; options in parentheses "
           "(openvino(INFERENCE_PRECISION_HINT=f32), onnxruntime-web(numThreads=1)); one not ready here is skipped "
           "naming the install command (onnx-parity runtimes --install NAME), an error when CI is set "
           "(default: onnxruntime)", _axis("parse_runtimes"), ("onnxruntime",), metavar="A,B"),
    Option("preprocess", "The deployment's own preprocessing, each its own item: module:function, command:CMD "
           "({images}, {output}), tensors:DIR, canvas (default: metadata, the file's own data config through preprocess)",
           _axis("parse_preprocess"), ("metadata",), metavar="SPEC"),
    Option("preprocess-max-logit-effect", "--onnx-parity-preprocess: a library difference alone (resize kernel, antialias) "
           "fails when your tensors move the file's logits by more than this many times their RMS against timm's tensors "
           "(default: tolerances.PREPROCESS_MAX_LOGIT_EFFECT)", parse.nonneg_float, None, metavar="X"),
    Option("preprocess-min-top1", "--onnx-parity-preprocess: ... or when top-1 agreement with timm's tensors through the file "
           "falls below this fraction (default: tolerances.PREPROCESS_MIN_TOP1_AGREEMENT)", parse.fraction, None,
           metavar="F"),
    Option("labels", "Class names in index order, one a line (timm's --class-map format), for an image folder whose "
           "sub-folders are named by class name", parse.existing_file, None, metavar="FILE"),
    Option("image-size", "Input size(s) to check, a comma list of pixels (default: the model's own); the export gets "
           "dynamic height and width", _axis("parse_image_sizes"), (), metavar="224,288"),
    Option("simplifier", "Simplifier(s) run on the export, each its own item, a comma list of " + ", ".join(SIMPLIFIERS) +
           " (default: none); one not installed is skipped with the pip install that brings it",
           _axis("choice_list", *SIMPLIFIERS), ("none",), metavar="none,onnxslim,onnxsim"),
    Option("embed-preprocessing", "Also check the file with timm's eval transform embedded in the graph (uint8 pixels in)",
           parse.boolean, False, "bool"),
    Option("atol", "Absolute logits tolerance; give with --onnx-parity-rtol (default: 5e-4 x logit RMS for float32)",
           parse.nonneg_float, None, metavar="X"),
    Option("rtol", "Relative logits tolerance; give with --onnx-parity-atol (default: 1e-4 for float32)", parse.nonneg_float, None, metavar="X"),
    Option("seed", "Seed of random weights and batches (default: 0)", parse.int_range(0, 2**32 - 1), 0, metavar="N"),
    Option("images", "Folder of real images, searched recursively; an ImageFolder tree of ImageNet classes also gives "
           "accuracies (default: the bundled sample photos)", parse.image_dir, None, metavar="DIR"),
    Option("cache-dir", "Where exports are cached (default: onnx-parity in pytest's cache dir)", parse.path, None, metavar="DIR"),
    Option("no-cache", "Export afresh and keep nothing", parse.boolean, False, "bool"),
    Option("report", "Write the JSON report to PATH", parse.path, None, metavar="PATH"),
    Option("layers", "Per-layer comparison: always, on-failure or never (default: always)",
           parse.choice(*LAYER_MODES), "always", metavar="always|on-failure|never"),
    Option("layer-memory", "Memory budget for intermediate tensors of the per-layer comparison (default: 1GiB)", parse.size, None,
           metavar="SIZE"),
    Option("plots", "Write a per-layer error plot (PNG) per model into DIR (needs matplotlib)", parse.path, None, metavar="DIR"),
    Option("max-accuracy-drop", "On a labelled image folder, fail when ONNX top-1 is worse than torch by more than this many "
           f"percentage points (default: {MAX_ACCURACY_DROP_PP:g})", parse.nonneg_float, MAX_ACCURACY_DROP_PP, metavar="PP"),
    Option("int8-min-agreement", "int8 files: least top-1 agreement with torch on the real images, a fraction "
           "(default: the int8 profile's 0.85, docs/precision.md)", parse.fraction, None, metavar="F"),
    Option("int8-max-accuracy-drop", "int8 files on a labelled folder: most top-1 accuracy lost against torch, in percentage "
           "points (default: the int8 profile's 10, docs/precision.md)", parse.nonneg_float, None, metavar="PP"),
    Option("test-time", "Use the models' test-time input size and crop (test_input_size, test_crop_pct) where they have them",
           parse.boolean, False, "bool"),
    Option("shard", "Run only shard K of N of the model list (deterministic, balanced), e.g. 1/4", parse.shard, None, metavar="K/N"),
    Option("output", "Name of the logits (or embedding) output of a file with several outputs, or a comma list naming a "
           "features model's outputs in order (default: chosen by shape and order)",
           parse.name, None, metavar="NAME"),
    Option("data-config", "Data config fields that override the model's own (and a checkpoint's training args), "
           "key=value pairs of Python literals, e.g. mean=(0.5,0.5,0.5),std=(0.5,0.5,0.5),crop_pct=0.95",
           parse.data_config, None, metavar="K=V,..."),
    Option("weight-set", "Which weights of a timm train.py checkpoint that holds both: ema (its state_dict_ema, as "
           "timm.create_model(checkpoint_path=) loads) or state_dict (default: ema)", parse.choice(*WEIGHT_SETS), "ema",
           metavar="ema|state_dict"),
    Option("artifacts", "Write a reproducer bundle (ONNX file, inputs, outputs, reproduce.py) per failing model into DIR",
           parse.path, None, metavar="DIR"),
    Option("golden", "Golden references in DIR, one file per spec and variant: recorded when missing (check golden skipped, "
           "saying where), else torch's and ONNX Runtime's outputs each compared with theirs", parse.path, None, metavar="DIR"),
    Option("golden-update", "Rewrite the goldens of --onnx-parity-golden (after an intended change)", parse.boolean, False, "bool"),
)


@dataclass(frozen=True)
class Settings:
    enabled: bool = False
    models: tuple[str, ...] = DEFAULT_MODELS
    models_given: bool = False
    weights: str = "random"
    exporter: tuple[str, ...] = ("dynamo",)
    opset: tuple[int, ...] = ()
    precision: tuple[str, ...] = ("fp32",)
    ort_opt: tuple[str, ...] = ("all",)
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    image_size: tuple[int, ...] = ()
    simplifier: tuple[str, ...] = ("none",)
    embed_preprocessing: bool = False
    atol: float | None = None
    rtol: float | None = None
    seed: int = 0
    images: str | None = None
    cache_dir: str | None = None
    no_cache: bool = False
    report: str | None = None
    layers: str = "always"
    layer_memory: int | None = None
    plots: str | None = None
    max_accuracy_drop: float = MAX_ACCURACY_DROP_PP
    int8_min_agreement: float | None = None
    int8_max_accuracy_drop: float | None = None
    test_time: bool = False
    shard: tuple[int, int] | None = None
    artifacts: str | None = None
    output: str | None = None
    data_config: dict[str, Any] | None = None
    weight_set: str = "ema"
    golden: str | None = None
    golden_update: bool = False
    runtime: tuple[str, ...] = ("onnxruntime",)
    preprocess: tuple[str, ...] = ("metadata",)
    labels: str | None = None
    preprocess_max_logit_effect: float | None = None
    preprocess_min_top1: float | None = None
    rootdir: str | None = None  # pytest's rootdir: a relative module, command or tensor folder of --onnx-parity-preprocess
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        # the matrix axes are tuples; a single value (Settings(opset=18), as before the matrix) is one-element
        for name in ("exporter", "opset", "precision", "ort_opt", "providers", "image_size", "simplifier", "runtime",
                     "preprocess"):
            v = getattr(self, name)
            if v is None or isinstance(v, (str, int)):
                object.__setattr__(self, name, () if v is None else (v,))
            elif not isinstance(v, tuple):
                object.__setattr__(self, name, tuple(v))

    def parity_options(self, **overrides: Any) -> dict[str, Any]:
        """The :class:`~.options.ParityOptions` of one run: every field the two share, copied by name; each
        matrix axis (a tuple here) at its first value (a variant overrides them); ``weights`` per spec."""
        from .options import ParityOptions

        opts = {f.name: getattr(self, f.name) for f in fields(ParityOptions) if f.name in _SETTINGS_FIELDS}
        for name in _AXIS_FIELDS:
            values = getattr(self, _AXIS_FIELDS[name])
            opts[name] = values[0] if values else None
        opts.update(weights=None, use_cache=not self.no_cache, embed_preprocessing=False,
                    dynamic_size=bool(self.image_size))
        opts.update(overrides)
        return opts

    def describe(self) -> str:
        parts = [f"exporter={','.join(self.exporter)}", f"opset={','.join(map(str, self.opset)) or 'default'}",
                 f"weights={self.weights}", f"seed={self.seed}", f"layers={self.layers}"]
        for name, default in (("precision", ("fp32",)), ("ort_opt", ("all",)), ("providers", ("CPUExecutionProvider",)),
                              ("image_size", ()), ("simplifier", ("none",)), ("runtime", ("onnxruntime",)),
                              ("preprocess", ("metadata",))):
            if getattr(self, name) != default:
                parts.append(f"{name}={','.join(map(str, getattr(self, name)))}")
        if self.embed_preprocessing:
            parts.append("embed_preprocessing")
        if self.atol is not None:
            parts.append(f"atol={self.atol:g} rtol={self.rtol:g}")
        if self.shard:
            parts.append(f"shard={self.shard[0]}/{self.shard[1]}")
        parts += [f"golden={self.golden}{' (update)' if self.golden_update else ''}"] if self.golden else []
        return ", ".join(parts)


#: ParityOptions field -> the Settings axis (a tuple) whose first value it takes
_AXIS_FIELDS = {"exporter": "exporter", "opset": "opset", "precision": "precision", "ort_opt": "ort_opt",
                "provider": "providers", "image_size": "image_size", "simplifier": "simplifier", "runtime": "runtime",
                "preprocess": "preprocess"}
_SETTINGS_FIELDS = frozenset(f.name for f in fields(Settings)) - set(_AXIS_FIELDS) - {"embed_preprocessing"}


#: options whose value is a path: from the ini file, a relative one is relative to the ini file's folder
_PATH_PARSERS = (parse.path, parse.image_dir, parse.existing_file)


def _ini_path(config: Any, value: Any) -> Any:
    """An ini key's relative path, anchored at the ini file's folder (as pytest's own ``paths`` keys are);
    a command-line value stays relative to the folder pytest was started in."""
    text = str(value).strip()
    if not text or Path(text).expanduser().is_absolute():
        return value
    inipath = getattr(config, "inipath", None)
    base = Path(inipath).parent if inipath else getattr(config, "rootpath", None)
    return str(Path(base) / text) if base is not None else value


def attr(noun: str) -> str:
    return noun.replace("-", "_")


def add_options(parser: Any) -> None:
    group = parser.getgroup("onnx-parity", "ONNX parity of timm models (pytest-onnx-parity)")
    group.addoption("--onnx-parity", action="store_true", default=False, dest="onnx_parity",
                    help="Run the ONNX parity gate: one test item per configured model")
    for opt in OPTIONS:
        dest = "onnx_parity_" + attr(opt.noun)
        if opt.ini_type == "bool":
            group.addoption(f"--onnx-parity-{opt.noun}", action="store_true", default=None, dest=dest, help=opt.help)
            # read as text and parsed here (parse.boolean): pytest 9.2 stops on a bad "bool" ini value with a message that
            # names no key ("invalid truth value 'maybe'"); this way every pytest names the key and the fix
            parser.addini(dest, opt.help + " (ini: true or false)", type="string", default=None)
        else:
            group.addoption(f"--onnx-parity-{opt.noun}", action="store", default=None, dest=dest, metavar=opt.metavar, help=opt.help)
            parser.addini(dest, opt.help, type=opt.ini_type, default=None)


class SettingsError(ValueError):
    pass


def resolve(config: Any) -> Settings:
    """Read options and ini keys (CLI wins) into :class:`Settings`; raise SettingsError naming the bad one."""
    values: dict[str, Any] = {"enabled": bool(config.getoption("onnx_parity"))}
    sources: dict[str, str] = {}
    for opt in OPTIONS:
        dest = "onnx_parity_" + attr(opt.noun)
        raw, where = config.getoption(dest), f"--onnx-parity-{opt.noun}"
        if raw is None:
            try:
                ini = config.getini(dest)
            except ValueError as exc:  # a bool key pytest cannot read ("maybe")
                raise SettingsError(f"ini key {dest}: bad value: {exc}; expected true or false") from None
            if opt.ini_type == "bool" and ini not in (None, "", []) and not isinstance(ini, bool):
                try:
                    ini = parse.boolean(ini)
                except ValueError:
                    raise SettingsError(f"ini key {dest}: bad value {ini!r}: expected true or false "
                                        f"(or 1/0, yes/no, on/off)") from None
            if ini not in (None, "", []) and ini is not False:  # an unset or false bool key: not given
                raw, where = ini, f"ini key {dest}"
                if opt.parse in _PATH_PARSERS:
                    raw = _ini_path(config, raw)
        if raw is None:
            continue
        try:
            values[attr(opt.noun)] = opt.parse(raw)
        except ValueError as exc:
            shown = ",".join(raw) if isinstance(raw, list) else raw
            why = str(exc)
            if why.startswith(f"{str(shown).strip()}: "):  # a list parser names the bad item: here it is the value itself
                why = why[len(str(shown).strip()) + 2:]
            raise SettingsError(f"{where}: bad value {shown!r}: {why}") from None
        sources[attr(opt.noun)] = where
    if "models" in values:
        values["models_given"] = True
    if ("atol" in values) != ("rtol" in values):
        from .errors import SpecError
        from .tolerances import check_pair

        given = "atol" if "atol" in values else "rtol"
        other = "rtol" if given == "atol" else "atol"
        try:
            check_pair(values.get("atol"), values.get("rtol"),
                       where=f"{sources[given]}={values[given]:g} given without --onnx-parity-{other}",
                       defaults="the dtype's defaults, scaled by the logits")
        except SpecError as exc:
            raise SettingsError(str(exc)) from None
    if values.get("golden_update") and "golden" not in values:
        raise SettingsError(f"{sources['golden_update']} rewrites the goldens of a folder: give --onnx-parity-golden=DIR too")
    low = [o for o in values.get("opset", ()) if o < 18]
    if "torchscript" not in values.get("exporter", ("dynamo",)) and low:  # with both, dynamo x low opset items are skipped
        raise SettingsError(
            f"{sources['opset']}: bad value {low[0]}: the dynamo exporter writes opset 18 or newer; "
            "use --onnx-parity-exporter torchscript for older opsets"
        )
    rootpath = getattr(config, "rootpath", None)
    if rootpath is not None:
        values["rootdir"] = str(rootpath)
    known = {f.name for f in fields(Settings)}
    return Settings(**{k: v for k, v in values.items() if k in known}, sources=sources)
