"""pytest entry point: options, the ``onnx_parity`` marker and the fixtures.

Importing this module imports neither torch, timm, onnx nor onnxruntime: the
fixtures and the gate import them when they run.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest

from ..axes import use_ema
from ..settings import Settings, SettingsError, add_options, resolve
from ..specs.optiontable import marker_keywords

SETTINGS_KEY = pytest.StashKey[Settings]()
#: the keywords of ``@pytest.mark.onnx_parity``: the rows of the option table (specs/optiontable.py) marked ``marker``
MARKER_KEYWORDS = marker_keywords()
#: keywords no fixture reads: a tolerance belongs to the assertion that compares, not to the marker
MARKER_TOLERANCE_KEYWORDS = ("atol", "rtol")


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "onnx_parity(model=..., **options): point the onnx-parity fixtures at a timm model spec "
        f"(keywords: {', '.join(sorted(MARKER_KEYWORDS))})",
    )
    if not hasattr(config, "workerinput"):  # xdist workers: the controller has checked the command line
        # "--onnx-parity-images DIR" (two arguments) can make pytest pick its rootdir and ini file from DIR
        # before this plugin is loaded; refuse a run configured that way (rootdir.py explains)
        from ..settings import OPTIONS
        from .rootdir import check_space_form_paths

        moved = check_space_form_paths(config, [f"--onnx-parity-{o.noun}" for o in OPTIONS if o.ini_type != "bool"])
        if moved:
            raise pytest.UsageError(moved)
    try:
        settings = resolve(config)
    except SettingsError as exc:
        raise pytest.UsageError(str(exc)) from None
    if settings.cache_dir is None:
        cache = getattr(config, "cache", None)
        if cache is not None:
            from dataclasses import replace

            settings = replace(settings, cache_dir=str(cache.mkdir("onnx-parity")))
    config.stash[SETTINGS_KEY] = settings
    typed = [str(a) for a in config.invocation_params.args]  # typed on the command line (not addopts, not ini)
    if not settings.enabled and any(a == "--onnx-parity-models" or a.startswith("--onnx-parity-models=") for a in typed):
        raise pytest.UsageError("--onnx-parity-models configures the ONNX parity gate, which runs only with "
                                "--onnx-parity: add --onnx-parity (and -m onnx_parity to run the gate alone)")
    if settings.enabled:
        from .gate import GatePlugin

        config.pluginmanager.register(GatePlugin(config, settings), "onnx-parity-gate")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("onnx_parity"):
        tolerances = [k for k in MARKER_TOLERANCE_KEYWORDS if k in marker.kwargs]
        if tolerances:
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.onnx_parity got {' and '.join(tolerances)}, which no fixture reads: "
                "give the tolerance to the comparison, assert_logits_close(expected, actual, atol=..., rtol=...) "
                "(assert_topk_agreement takes them too), or to the gate: --onnx-parity-atol=... --onnx-parity-rtol=...")
        unknown = sorted(set(marker.kwargs) - MARKER_KEYWORDS)
        if unknown or marker.args:
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.onnx_parity got unknown "
                f"{'keyword(s) ' + ', '.join(unknown) if unknown else 'positional arguments'}; "
                f"use keywords: {', '.join(sorted(MARKER_KEYWORDS))}"
            )


# -- fixtures --------------------------------------------------------------------------------------


class _Store:
    """Session-wide cache of models, exports and sessions, so nothing is exported twice."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.models: dict[Any, Any] = {}
        self.exports: dict[Any, Any] = {}
        self.sessions: dict[Any, Any] = {}

    def options(self, request: pytest.FixtureRequest | None, overrides: dict[str, Any]) -> dict[str, Any]:
        """Each marker keyword: the marker's value, else the options' one run (an axis: its first value), else the
        run's own default (``model``: none)."""
        from dataclasses import fields

        from ..options import ParityOptions

        gate = self.settings.parity_options()
        run = {f.name: f.default for f in fields(ParityOptions)}
        opts: dict[str, Any] = {k: gate.get(k, run.get(k)) for k in sorted(MARKER_KEYWORDS)}
        marker = request.node.get_closest_marker("onnx_parity") if request is not None else None
        if marker is not None:
            opts.update(marker.kwargs)
        opts.update({k: v for k, v in overrides.items() if v is not None})
        return opts

    def model_key(self, opts: dict[str, Any]) -> tuple[Any, ...]:
        """What identifies the fixtures' model: the spec, its weights and seed; or a given module itself.

        A given module is part of the key (the store holds it, so no later object can
        take its place the way a reused ``id()`` could).
        """
        spec = opts.get("model")
        if spec is None:
            raise _no_model()
        if not isinstance(spec, str):
            return ("module", spec)
        from ..specs import names_weights

        weights = opts.get("weights") or (None if names_weights(spec) else self.settings.weights)
        args = tuple(sorted((opts.get("model_args") or {}).items()))
        config = tuple(sorted((opts.get("data_config") or {}).items()))
        return ("spec", spec, weights, opts["seed"], args, config)

    def loaded(self, opts: dict[str, Any]) -> Any:
        """The fixtures' model with its record (model/record.py), built once per key."""
        key = self.model_key(opts)
        if key not in self.models:
            if key[0] == "module":
                from ..model.build import loaded

                self.models[key] = loaded(key[1])
            else:
                from ..model.build import load_model_record

                _, spec, weights, seed, args, config = key
                self.models[key] = load_model_record(spec, weights, seed=seed, model_args=dict(args) or None,
                                                     data_config=dict(config) or None,
                                                     use_ema=use_ema(self.settings.weight_set))
        return self.models[key]

    def model(self, opts: dict[str, Any]) -> Any:
        return self.loaded(opts).module

    def export(self, opts: dict[str, Any]) -> Any:
        from ..onnxfile.export import export_onnx

        model = self.loaded(opts)
        key = (self.model_key(opts), opts["exporter"], opts["opset"])
        if key not in self.exports:
            self.exports[key] = export_onnx(model, exporter=opts["exporter"], opset=opts["opset"],
                                            cache_dir=self.settings.cache_dir, seed=opts["seed"])
        return self.exports[key]

    def session(self, opts: dict[str, Any]) -> Any:
        """A runner on the export, on the marker's (else the options') runtime, provider and optimisation level."""
        from ..errors import VariantSkip
        from ..runtime.runner import RunSettings, open_runner, runtime_missing

        exp = self.export(opts)
        settings = RunSettings(runtime=opts["runtime"], provider=opts["provider"], ort_opt=opts["ort_opt"])
        key = (str(exp.path), settings)
        if key not in self.sessions:
            why = runtime_missing(settings)
            if why:
                raise VariantSkip(why)
            self.sessions[key] = open_runner(exp.path, settings)
        return self.sessions[key]


def _no_model() -> Exception:
    from ..errors import SpecError

    return SpecError("no model for the onnx-parity fixtures: mark the test with "
                     "@pytest.mark.onnx_parity(model='resnet18') (or pass model= to onnx_export)")


@pytest.fixture(scope="session")
def onnx_parity_settings(pytestconfig: pytest.Config) -> Settings:
    """The resolved ``--onnx-parity-*`` options and ini keys (a frozen object)."""
    return pytestconfig.stash[SETTINGS_KEY]


@pytest.fixture(scope="session")
def _onnx_parity_store(onnx_parity_settings: Settings) -> _Store:
    return _Store(onnx_parity_settings)


@pytest.fixture
def timm_model(request: pytest.FixtureRequest, _onnx_parity_store: _Store) -> Any:
    """The marker's timm model in eval mode, built once per session (do not modify it in place)."""
    return _onnx_parity_store.model(_onnx_parity_store.options(request, {}))


@pytest.fixture
def onnx_export(request: pytest.FixtureRequest, _onnx_parity_store: _Store) -> Callable[..., Any]:
    """Factory: ``onnx_export(model=None, exporter=None, opset=None, weights=None, seed=None) -> OnnxExport``.

    Defaults come from the ``onnx_parity`` marker and the ``--onnx-parity-*`` options;
    each distinct export is made once per session (and cached across sessions).
    """
    def factory(model: Any = None, *, exporter: str | None = None, opset: int | None = None,
                weights: str | None = None, seed: int | None = None) -> Any:
        opts = _onnx_parity_store.options(request, {"model": model, "exporter": exporter, "opset": opset,
                                                     "weights": weights, "seed": seed})
        return _onnx_parity_store.export(opts)

    return factory


@pytest.fixture
def data_config(request: pytest.FixtureRequest, _onnx_parity_store: _Store) -> dict[str, Any]:
    """The marker model's own data config (input_size, interpolation, mean, std, crop_pct, crop_mode)."""
    from ..preprocessing.dataconfig import DATA_CONFIG_FIELDS, apply_test_time, resolve_data_config

    opts = _onnx_parity_store.options(request, {})
    cfg = resolve_data_config(_onnx_parity_store.loaded(opts))
    return apply_test_time(cfg) if opts["test_time"] else {k: cfg[k] for k in DATA_CONFIG_FIELDS}


@pytest.fixture
def random_batch(request: pytest.FixtureRequest, _onnx_parity_store: _Store, data_config: dict[str, Any]) -> Any:
    """A seeded batch of random pixels normalised for the marker model: float32 NCHW numpy array."""
    from ..runtime.forward import random_batch as make

    opts = _onnx_parity_store.options(request, {})
    return make(data_config, int(opts["batch_size"]), int(opts["seed"]))


@pytest.fixture
def real_batch(request: pytest.FixtureRequest, _onnx_parity_store: _Store, data_config: dict[str, Any]) -> Any:
    """Real photos (bundled, or ``--onnx-parity-images``) preprocessed for the marker model: float32 NCHW."""
    from ..preprocessing.images import real_batch as make

    return make(data_config, _onnx_parity_store.options(request, {})["images"])[0]


@pytest.fixture
def ort_session(request: pytest.FixtureRequest, _onnx_parity_store: _Store) -> Any:
    """A runner on the marker model's export, with ONNX Runtime's session API (``get_inputs``, ``run``): Python
    onnxruntime on the CPU unless the marker (``runtime=``, ``provider=``, ``ort_opt=``) or the options say otherwise;
    one per export and runtime per session. A runtime not ready here skips the test, naming the install command
    (fails it when ``CI`` is set: a CI that cannot start the runtime it tests is broken)."""
    from ..errors import VariantSkip

    opts = _onnx_parity_store.options(request, {})
    try:
        return _onnx_parity_store.session(opts)
    except VariantSkip as exc:
        from ..runtime.environment import on_ci

        if on_ci() and opts.get("runtime", "onnxruntime") != "onnxruntime":
            pytest.fail(f"{exc} (CI is set: install it in the CI script)", pytrace=False)
        pytest.skip(str(exc))
