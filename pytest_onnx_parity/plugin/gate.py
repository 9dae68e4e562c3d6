"""The CI gate: a collector of one item per model and variant, a summary table and a JSON report.

Registered by the plugin only when ``--onnx-parity`` is given. The model specs are checked up
front, on the controller before xdist starts its workers (:func:`check_up_front`). The items are
yielded by :class:`GateCollector`, which the session collects beside the test files, so pytest
counts, selects (``-k``, ``-m onnx_parity``, ``--deselect``) and reports them itself. Each item
runs one :class:`~..run.ParityRun` in ``setup``: a verdict the numbers cannot support is a
pytest ERROR there, a failed export a FAILED item in ``runtest``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from ..errors import OnnxParityError, ParityFailure
from ..report.render import summary_lines
from ..report.schema import write_report
from ..runtime.environment import CPU_KEYS, environment
from ..settings import Settings

MARKER = "onnx_parity"
COLLECTOR = "onnx-parity"


class ParityItem(pytest.Item):
    """``onnx-parity[<spec>]``: export one model and check it."""

    def __init__(self, *, spec: Any, settings: Settings, variant: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.settings = settings
        self.variant = variant
        self.run: Any = None
        self.phases: list[tuple[str, float]] = []
        self.add_marker(MARKER)

    def _progress(self, phase: str) -> None:
        """Phases are timed for the report section; shown live with ``-v -s`` (output not captured)."""
        self.phases.append((phase, time.perf_counter()))
        config = self.config
        verbosity = config.get_verbosity() if hasattr(config, "get_verbosity") else config.getoption("verbose")  # pytest < 8
        if verbosity > 0 and config.getoption("capture") == "no" and not hasattr(config, "workerinput"):
            tr = config.pluginmanager.get_plugin("terminalreporter")
            if tr is not None:
                tr.write(f" [{phase}]", cyan=True, flush=True)

    def setup(self) -> None:
        """Build, export and check. A verdict the numbers cannot support (status ``error``: the model
        could not be built or exported, or it is ill-conditioned) fails here, so pytest reports the item
        as an ERROR, never as a FAILED export; ``runtest`` raises only for a failed export."""
        from ..options import ParityOptions
        from ..run import ParityRun

        axes = self.variant.parity_options() if self.variant is not None else {}
        opts = ParityOptions.from_kwargs(**self.settings.parity_options(weights=self.spec.weights, **axes))
        # the variants of one spec run one after another: build its model once (it is only read by the checks)
        key = (self.spec.text, opts.weights, opts.seed, opts.dynamic_size)
        models = self.config.stash.setdefault(MODEL_KEY, {})
        prebuilt = models.get(key)
        models.clear()  # one model held at a time
        self.run = ParityRun(self.spec, None, opts, progress=self._progress, prebuilt=prebuilt)
        result = self.run.execute()
        if self.run.built is not None:
            models[key] = self.run.built  # the module with its record
        result.model = self.spec.text
        self._record(result)
        if result.status == "skipped":
            pytest.skip(f"{self.spec.text}: {result.error}")
        if self.settings.plots and result.layer_comparison is not None:
            self._plot(result)
        if result.status == "error":
            if self.settings.artifacts and self.run.context is not None:
                self._bundle()
            pytest.fail(result.failure_message(), pytrace=False)  # the message names the fix: no traceback

    def runtest(self) -> None:
        result = self.run.result
        if not result.passed:
            if self.settings.artifacts:
                self._bundle()
            raise ParityFailure(result.failure_message())

    def teardown(self) -> None:
        if self.run is not None:
            self.run.close()
        self.run = None  # free the model and the session

    def _record(self, result: Any) -> None:
        d = result.to_dict()
        # travels on this item's test report (to the xdist controller too), see GatePlugin
        self.stash[ITEM_RESULT_KEY] = d
        for key in ("max_abs_diff", "top1_agreement", "first_divergence", "cache_hit"):
            self.user_properties.append((key, d.get(key)))
        self.user_properties.append(("export_s", d.get("timings", {}).get("export_s")))
        self.user_properties.append(("status", d["status"]))
        if self.phases:
            ends = [t for _, t in self.phases[1:]] + [time.perf_counter()]
            self.add_report_section("setup", "onnx-parity phases", "  ".join(
                f"{name} {end - start:.1f}s" for (name, start), end in zip(self.phases, ends)))
        # the summary table is printed once, in the session summary (not again as a captured section)

    def _plot(self, result: Any) -> None:
        from ..report.plots import layer_plot

        try:  # one file per item: the spec and the values of the varying axes, as in the item's name
            layer_plot(result, Path(self.settings.plots), self.name[len("onnx-parity["):-1])  # type: ignore[arg-type]
        except OnnxParityError as exc:
            self.add_report_section("call", "onnx-parity plots", str(exc))

    def _bundle(self) -> None:
        from ..report.bundle import write_bundle

        try:
            where = write_bundle(self.run, Path(self.settings.artifacts))
        except OSError as exc:  # a bundle problem must not hide the parity failure
            self.add_report_section("call", "onnx-parity artifacts",
                                    f"cannot write the reproducer bundle of {self.spec.text}: {exc}")
            return
        self.add_report_section("call", "onnx-parity artifacts", f"reproducer bundle: {where}")

    def repr_failure(self, excinfo: Any, style: Any = None) -> Any:
        if isinstance(excinfo.value, OnnxParityError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"[onnx-parity] {self.name[len('onnx-parity['):-1]}"


class GateCollector(pytest.Collector):
    """The gate's items, one per (spec, variant) of the shard; collected by the session beside the test files."""

    def __init__(self, *, plan: list[tuple[str, Any, Any]], settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.settings = settings

    def collect(self) -> Iterator[pytest.Item]:
        for nodeid, spec, variant in self.plan:
            yield ParityItem.from_parent(self, name=nodeid, nodeid=nodeid, spec=spec, settings=self.settings,
                                         variant=variant)


RESULTS_KEY = pytest.StashKey[list]()
MODEL_KEY = pytest.StashKey[dict]()
ITEM_RESULT_KEY = pytest.StashKey[dict]()
REPORT_ATTR = "onnx_parity_result"


class GatePlugin:
    """Hooks active only with ``--onnx-parity``."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self._seen: set[str] = set()
        self._items: dict[str, tuple[Any, Any]] = {}  # nodeid -> (spec, variant)
        config.stash[RESULTS_KEY] = []
        self._specs: list[Any] | None = None

    def specs(self) -> list[Any]:
        """The gate's model specs: patterns expanded, ``@FILE`` paths resolved, all checked up front
        (:func:`check_up_front`); a problem is a ``pytest.UsageError``. Worked out once per process."""
        if self._specs is None:
            from ..specs import expand_patterns, resolve_onnx_file

            s = self.settings
            try:
                specs = expand_patterns(list(s.models), default_weights=s.weights)
            except OnnxParityError as exc:
                raise pytest.UsageError(f"--onnx-parity-models: {exc}") from None
            except ImportError as exc:  # timm missing when a pattern needs it
                raise pytest.UsageError(f"--onnx-parity-models: {exc}") from None
            try:  # NAME[=WEIGHTS]@FILE.onnx: the file must exist before anything runs (relative to the rootdir)
                specs = [resolve_onnx_file(spec, self.config.rootpath) for spec in specs]
            except OnnxParityError as exc:
                raise pytest.UsageError(f"--onnx-parity-models: {exc}") from None
            check_up_front(specs, s.sources.get("models", "--onnx-parity-models"))
            check_preprocessors(s)
            self._specs = specs
        return self._specs

    def plan(self) -> list[tuple[str, Any, Any]]:
        """``(nodeid, spec, variant)`` of each item of this shard, in a stable order."""
        from ..variants import item_id, shard_pairs, variants_of, varying_axes

        s = self.settings
        variants = variants_of(s)
        varying = varying_axes(variants)
        out = []
        for spec, v in shard_pairs([(spec, v) for spec in self.specs() for v in variants], s.shard):
            nodeid = item_id(spec.text, v, varying)
            self._items[nodeid] = (spec, v)
            out.append((nodeid, spec, v))
        return out

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # before xdist starts its workers: a usage error raised in a worker's collection is lost there
        # (the run ends with "no tests ran"), so the controller checks the specs first
        self.specs()

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(self, collector: pytest.Collector) -> Any:
        """The session's own collection gets the gate's collector beside the test files and folders."""
        report = yield
        if isinstance(collector, pytest.Session) and report.passed:
            report.result.append(GateCollector.from_parent(collector, name=COLLECTOR, nodeid=COLLECTOR,
                                                           plan=self.plan(), settings=self.settings))
        return report

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        env = environment()
        return [
            "onnx-parity: " + ", ".join(f"{k} {v}" for k, v in env.items()
                                        if k != "pytest-onnx-parity" and k not in CPU_KEYS),
            f"onnx-parity cpu: {env['cpu']} ({env['machine']}; {env['cpu_flags']})",
            f"onnx-parity settings: {self._described()}",
        ]

    def _described(self) -> str:
        """The settings line, its weights those the specs load (a spec's own ``=WEIGHTS``, else the default)."""
        from dataclasses import replace

        try:
            specs = self.specs()
        except pytest.UsageError:  # the session says why; the header keeps the option's value
            return self.settings.describe()
        return replace(self.settings, weights=loaded_weights(specs, self.settings.weights)).describe()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: Any) -> Any:
        outcome = yield
        if isinstance(item, ParityItem) and ITEM_RESULT_KEY in item.stash:
            # each result rides on the report of the phase that produced it: xdist serialises report
            # attributes to the controller as they happen, so a worker that dies later loses nothing
            setattr(outcome.get_result(), REPORT_ATTR, json.dumps(item.stash[ITEM_RESULT_KEY]))
            del item.stash[ITEM_RESULT_KEY]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if hasattr(self.config, "workerinput") or not report.nodeid.startswith("onnx-parity["):
            return
        payload = getattr(report, REPORT_ATTR, None)
        results = self.config.stash[RESULTS_KEY]
        if payload:
            results.append(json.loads(payload))
            self._seen.add(report.nodeid)
        elif report.failed and report.nodeid not in self._seen:
            # no result came back: the process running the item died (xdist reports "crashed")
            self._seen.add(report.nodeid)
            reason = " ".join(str(report.longrepr).split())
            spec, variant = self._items.get(report.nodeid, (None, None))
            results.append(crashed_entry(spec.text if spec is not None else report.nodeid[len("onnx-parity["):-1],
                                         self.settings, "no result came back: " + (reason[-400:] or "the process running it died"),
                                         variant))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(self.config, "workerinput"):
            return
        if self.settings.report:
            write_report(Path(self.settings.report), self.config.stash[RESULTS_KEY])

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if hasattr(self.config, "workerinput"):
            return
        results = self.config.stash[RESULTS_KEY]
        if not results:
            return
        terminalreporter.write_sep("=", "onnx-parity summary")
        terminalreporter.write_line(summary_lines(results))
        from ..report.notes import accuracy_lines

        for line in accuracy_lines(results):
            terminalreporter.write_line(line)
        from ..report.written import written_paths_lines

        for line in written_paths_lines(self.settings):
            terminalreporter.write_line(line)


def loaded_weights(specs: list[Any], default: str) -> str:
    """What the specs load, each kind or checkpoint once, in order: ``random``, ``pretrained``, a checkpoint by
    its file name (``model_best.pth.tar``), a folder or hub repo as written; no specs: the default."""
    seen = dict.fromkeys(Path(s.weights).name if s.weights_kind == "file" else str(s.weights) for s in specs)
    return ",".join(seen) or default


def check_up_front(specs: list[Any], where: str) -> None:
    """Refuse what no item could run, at session start, as ``onnx-parity check`` refuses it (exit 4 here, 2 there).

    First what needs no torch (:func:`~pytest_onnx_parity.specs.preflight`: checkpoints, ``@FILE``
    files), so those errors come within seconds; then every model name against timm's registry,
    once for the whole list (importing timm costs a few seconds, which the first item would pay
    anyway). All problems are named together.
    """
    from ..specs import check_model_name, preflight

    problems = []
    for spec in specs:
        try:
            preflight(spec)
        except OnnxParityError as exc:
            problems.append(str(exc))
    if not problems:
        for name in dict.fromkeys(spec.name for spec in specs):
            try:
                check_model_name(name)
            except OnnxParityError as exc:
                problems.append(str(exc))
            except ImportError as exc:  # timm missing: the items would say it too, later
                problems.append(f"cannot check the model names: {exc}")
                break
    if not problems:
        from ..model.constructor import check_model_args

        for spec in specs:
            try:
                check_model_args(spec)
            except OnnxParityError as exc:
                problems.append(str(exc))
    if problems:
        sep = "\n  " if len(problems) > 1 else " "
        raise pytest.UsageError(f"{where}:{sep}{sep.join(problems)}")


def check_preprocessors(settings: Settings) -> None:
    """Each ``--onnx-parity-preprocess`` value opened before anything runs: a module or function that is not there,
    a tensor folder that is missing, is a usage error naming it (a command is run only on the photos)."""
    specs = [p for p in settings.preprocess if p != "metadata"]
    if not specs:
        return
    from ..preprocessing.deploy import open_preprocessor

    where = settings.sources.get("preprocess", "--onnx-parity-preprocess")
    for text in specs:
        try:
            open_preprocessor(text, rootdir=settings.rootdir)
        except OnnxParityError as exc:
            raise pytest.UsageError(f"{where}: bad value {text!r}: {exc}") from None


def crashed_entry(spec_text: str, settings: Settings, error: str, variant: Any = None) -> dict[str, Any]:
    """The report entry of an item whose process died: every field of a result, unknown ones null."""
    from ..results import ParityResult
    from ..specs import parse_spec
    from ..variants import Variant

    try:
        weights: str | None = parse_spec(spec_text, default_weights=settings.weights).weights
    except OnnxParityError:
        weights = None
    v = variant or Variant(settings.exporter[0], settings.opset[0] if settings.opset else None)
    return ParityResult(model=spec_text, status="error", exporter=v.exporter, opset=v.opset,
                        weights=weights, error=error, variant=v.to_dict()).to_dict()



