"""Gate settings: CLI options and ini keys resolved once into a frozen object.

Every tunable has ``--onnx-parity-<noun>`` and ini key ``onnx_parity_<noun>``, one row of the option table
(:mod:`.specs.optiontable`); the command line wins. Values are validated here, without importing torch or timm; a
bad value is a ``pytest.UsageError`` (exit code 4) naming the option and value.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

from .specs import values as parse
from .specs.optiontable import DEFAULT_MODELS, ROWS, Option, gate_defaults

__all__ = ["DEFAULT_MODELS", "OPTIONS", "Option", "Settings", "SettingsError", "add_options", "attr", "resolve"]


def _comma_list(name: str, *choices: str) -> Callable[[Any], Any]:
    """The gate's comma list of one matrix axis, parsed by :mod:`.variants` (imported when used)."""
    def parse(v: Any) -> Any:
        from . import variants as matrix

        fn = getattr(matrix, name)
        return fn(*choices)(v) if choices else fn(v)
    return parse


#: The table's rows as the gate reads them: each axis row's parser is the comma-list parser of variants.py it names
#: (the table sits below variants.py, so it names it and this module binds it).
OPTIONS: tuple[Option, ...] = tuple(
    replace(o, parse=_comma_list(o.axis, *o.choices)) if o.axis else o for o in ROWS)
_D = gate_defaults()


@dataclass(frozen=True)
class Settings:
    """The resolved options: one field per row of the option table (its default read there), and what the gate
    derives (``enabled``, ``models_given``, ``rootdir``, ``sources``)."""

    enabled: bool = False
    models: tuple[str, ...] = _D["models"]
    models_given: bool = False
    weights: str = _D["weights"]
    exporter: tuple[str, ...] = _D["exporter"]
    opset: tuple[int, ...] = _D["opset"]
    precision: tuple[str, ...] = _D["precision"]
    ort_opt: tuple[str, ...] = _D["ort_opt"]
    providers: tuple[str, ...] = _D["providers"]
    image_size: tuple[int, ...] = _D["image_size"]
    simplifier: tuple[str, ...] = _D["simplifier"]
    embed_preprocessing: bool = _D["embed_preprocessing"]
    atol: float | None = _D["atol"]
    rtol: float | None = _D["rtol"]
    seed: int = _D["seed"]
    images: str | None = _D["images"]
    cache_dir: str | None = _D["cache_dir"]
    no_cache: bool = _D["no_cache"]
    report: str | None = _D["report"]
    layers: str = _D["layers"]
    layer_memory: int | None = _D["layer_memory"]
    plots: str | None = _D["plots"]
    max_accuracy_drop: float = _D["max_accuracy_drop"]
    int8_min_agreement: float | None = _D["int8_min_agreement"]
    int8_max_accuracy_drop: float | None = _D["int8_max_accuracy_drop"]
    test_time: bool = _D["test_time"]
    shard: tuple[int, int] | None = _D["shard"]
    artifacts: str | None = _D["artifacts"]
    output: str | None = _D["output"]
    data_config: dict[str, Any] | None = _D["data_config"]
    weight_set: str = _D["weight_set"]
    golden: str | None = _D["golden"]
    golden_update: bool = _D["golden_update"]
    runtime: tuple[str, ...] = _D["runtime"]
    preprocess: tuple[str, ...] = _D["preprocess"]
    labels: str | None = _D["labels"]
    preprocess_max_logit_effect: float | None = _D["preprocess_max_logit_effect"]
    preprocess_min_top1: float | None = _D["preprocess_min_top1"]
    rootdir: str | None = None  # pytest's rootdir: a relative module, command or tensor folder of --onnx-parity-preprocess
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        # the matrix axes are tuples; a single value (Settings(opset=18), as before the matrix) is one-element
        for name in _AXES:
            v = getattr(self, name)
            if v is None or isinstance(v, (str, int)):
                object.__setattr__(self, name, () if v is None else (v,))
            elif not isinstance(v, tuple):
                object.__setattr__(self, name, tuple(v))

    def parity_options(self, **overrides: Any) -> dict[str, Any]:
        """The :class:`~.options.ParityOptions` of one run: every field the two share, copied by name; each
        matrix axis (a tuple here) at its first value (a variant overrides them); ``weights`` per spec."""
        opts: dict[str, Any] = {}
        for o in OPTIONS:
            if o.field:
                value = getattr(self, o.attr)
                opts[o.field] = (value[0] if value else None) if o.axis else value
        opts.update(rootdir=self.rootdir, weights=None, use_cache=not self.no_cache, embed_preprocessing=False,
                    dynamic_size=bool(self.image_size))
        opts.update(overrides)
        return opts

    def describe(self) -> str:
        parts = [f"exporter={','.join(self.exporter)}", f"opset={','.join(map(str, self.opset)) or 'default'}",
                 f"weights={self.weights}", f"seed={self.seed}", f"layers={self.layers}"]
        for name in ("precision", "ort_opt", "providers", "image_size", "simplifier", "runtime", "preprocess"):
            if getattr(self, name) != _D[name]:
                parts.append(f"{name}={','.join(map(str, getattr(self, name)))}")
        if self.embed_preprocessing:
            parts.append("embed_preprocessing")
        if self.atol is not None:
            parts.append(f"atol={self.atol:g} rtol={self.rtol:g}")
        if self.shard:
            parts.append(f"shard={self.shard[0]}/{self.shard[1]}")
        parts += [f"golden={self.golden}{' (update)' if self.golden_update else ''}"] if self.golden else []
        return ", ".join(parts)


#: the Settings fields that are matrix axes (a tuple: the gate's comma list)
_AXES = tuple(o.attr for o in OPTIONS if o.axis)


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
