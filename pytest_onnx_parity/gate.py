"""The CI gate: one collected item per model, a summary table and a JSON report.

Registered by the plugin only when ``--onnx-parity`` is given.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from .errors import InconclusiveResult, OnnxParityError, ParityFailure
from .settings import Settings

MARKER = "onnx_parity"


CPU_KEYS = ("cpu", "machine", "cpu_flags")  # environment() keys describing the CPU


def environment() -> dict[str, str]:
    """Library versions, read from package metadata (nothing is imported), and the CPU: its model
    (``cpu``), ``machine`` and the instruction-set flags int8 and fp16 kernels depend on (``cpu_flags``,
    space separated: see :mod:`pytest_onnx_parity.cpu`)."""
    from .cpu import cpu_flags_text, cpu_info
    from .export import library_versions

    info = cpu_info()
    return {**library_versions(), "cpu": str(info["model"] or "unknown"), "machine": str(info["machine"] or "unknown"),
            "cpu_flags": cpu_flags_text(info)}


class ParityItem(pytest.Item):
    """``onnx-parity[<spec>]``: export one model and check it."""

    def __init__(self, *, spec: Any, settings: Settings, variant: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.settings = settings
        self.variant = variant
        self.run_state: Any = None
        self.add_marker(MARKER)

    def _progress(self, phase: str) -> None:
        if self.config.option.verbose > 0 and not hasattr(self.config, "workerinput"):
            tr = self.config.pluginmanager.get_plugin("terminalreporter")
            capman = self.config.pluginmanager.get_plugin("capturemanager")
            if tr is None:
                return
            if capman is not None:
                with capman.global_and_fixture_disabled():
                    tr.write(f" [{phase}]", cyan=True, flush=True)
                    if phase == "checks":
                        tr.write(" ")
            else:
                tr.write(f" [{phase}]", cyan=True, flush=True)

    def setup(self) -> None:
        """Build, export and check. A verdict the numbers cannot support (status ``error``: the model
        could not be built or exported, or it is ill-conditioned) is raised here, so pytest reports
        the item as an ERROR, never as a FAILED export; ``runtest`` raises only for a failed export."""
        from .parity import ParityOptions, ParityRun

        from .matrix import VariantSkip, missing_provider

        axes = self.variant.parity_options() if self.variant is not None else {}
        opts = ParityOptions.from_kwargs(**self.settings.parity_options(weights=self.spec.weights, **axes))
        self.run_state = ParityRun(self.spec, None, opts, progress=self._progress)
        # the variants of one spec run one after another: build its model once (it is only read by the checks)
        key = (self.spec.text, opts.weights, opts.seed, opts.dynamic_size)
        models = self.config.stash.setdefault(MODEL_KEY, {})
        self.run_state.prebuilt = models.get(key)
        try:
            why = missing_provider(opts.provider)
            if why:
                raise VariantSkip(why)
            models.clear()  # one model held at a time
            self.run_state.prepare()
            if self.run_state.model is not None:
                models[key] = self.run_state.model
        except VariantSkip as exc:
            if self.run_state.model is not None:
                models[key] = self.run_state.model
            r = self.run_state.result
            r.status, r.error = "skipped", str(exc)
            if r.variant is None:
                from .matrix import variant_dict

                r.variant = variant_dict(opts)
            self._record(r)
            pytest.skip(f"{self.spec.text}: {exc}")
        except OnnxParityError as exc:
            r = self.run_state.result
            r.status, r.error = "error", str(exc)
            r.timings["total_s"] = time.perf_counter() - self.run_state._t0
            self._record(r)
            raise
        result = self.run_state.run_checks()
        self._record(result)
        if self.settings.plots and result.layer_comparison is not None:
            self._plot(result)
        if result.status == "error":
            if self.settings.artifacts:
                self._bundle(result)
            raise InconclusiveResult(result.failure_message())

    def runtest(self) -> None:
        result = self.run_state.result
        if not result.passed:
            if self.settings.artifacts:
                self._bundle(result)
            raise ParityFailure(result.failure_message())

    def teardown(self) -> None:
        if self.run_state is not None:
            self.run_state.close()
        self.run_state = None  # free the model and the session

    def _record(self, result: Any) -> None:
        d = result.to_dict()
        d["model"] = self.spec.text
        # travels on this item's test report (to the xdist controller too), see GatePlugin
        self.stash[ITEM_RESULT_KEY] = d
        for key in ("max_abs_diff", "top1_agreement", "first_divergence", "cache_hit"):
            self.user_properties.append((key, d.get(key)))
        self.user_properties.append(("export_s", d.get("timings", {}).get("export_s")))
        self.user_properties.append(("status", d["status"]))
        # the summary table is printed once, in the session summary (not again as a captured section)

    def _plot(self, result: Any) -> None:
        from .plots import layer_plot

        try:  # one file per item: the spec and the values of the varying axes, as in the item's name
            layer_plot(result, Path(self.settings.plots), self.name[len("onnx-parity["):-1])  # type: ignore[arg-type]
        except OnnxParityError as exc:
            self.add_report_section("call", "onnx-parity plots", str(exc))

    def _bundle(self, result: Any) -> None:
        try:
            from .artifacts import write_bundle
        except ImportError:
            return
        try:
            where = write_bundle(self.run_state, Path(self.settings.artifacts))  # type: ignore[arg-type]
        except OSError as exc:  # a bundle problem must not hide the parity failure
            self.add_report_section("call", "onnx-parity artifacts",
                                    f"cannot write the reproducer bundle of {self.spec.text}: {exc}")
            return
        self.add_report_section("call", "onnx-parity artifacts", f"reproducer bundle: {where}")

    def repr_failure(self, excinfo: Any, style: Any = None) -> Any:
        if isinstance(excinfo.value, OnnxParityError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def _repr_failure_py(self, excinfo: Any, style: Any = None) -> Any:
        # setup errors (model build, export) are reported through this, not repr_failure:
        # our own errors carry a message that names the fix, so show it without a traceback
        if isinstance(excinfo.value, OnnxParityError):
            return str(excinfo.value)
        return super()._repr_failure_py(excinfo, style=style)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"[onnx-parity] {self.name[len('onnx-parity['):-1]}"


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
            from .specs import expand_patterns, resolve_onnx_file

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
            self._specs = specs
        return self._specs

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # before xdist starts its workers: a usage error raised in a worker's collection is lost there
        # (the run ends with "no tests ran"), so the controller checks the specs first
        self.specs()

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
        s = self.settings
        specs = self.specs()
        from .matrix import item_id, shard_pairs, variants_of, varying_axes

        variants = variants_of(s)
        varying = varying_axes(variants)
        pairs = shard_pairs([(spec, v) for spec in specs for v in variants], s.shard)
        new = []
        for spec, v in pairs:
            nodeid = item_id(spec.text, v, varying)
            self._items[nodeid] = (spec, v)
            new.append(ParityItem.from_parent(session, name=nodeid, nodeid=nodeid, spec=spec, settings=s, variant=v))
        items.extend(new)
        if new:  # so that "collected N items" counts the gate's items
            config.hook.pytest_collectreport(report=pytest.CollectReport("onnx-parity", "passed", None, new))

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        env = environment()
        return [
            "onnx-parity: " + ", ".join(f"{k} {v}" for k, v in env.items()
                                        if k != "pytest-onnx-parity" and k not in CPU_KEYS),
            f"onnx-parity cpu: {env['cpu']} ({env['machine']}; {env['cpu_flags']})",
            f"onnx-parity settings: {self.settings.describe()}",
        ]

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
        if self.settings.report:
            terminalreporter.write_line(f"onnx-parity report: {self.settings.report}")


def check_up_front(specs: list[Any], where: str) -> None:
    """Refuse what no item could run, at session start, as ``onnx-parity check`` refuses it (exit 4 here, 2 there).

    First what needs no torch (:func:`~pytest_onnx_parity.shipped.preflight`: checkpoints, ``@FILE``
    files), so those errors come within seconds; then every model name against timm's registry,
    once for the whole list (importing timm costs a few seconds, which the first item would pay
    anyway). All problems are named together.
    """
    from .shipped import preflight
    from .specs import check_model_name

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
    if problems:
        sep = "\n  " if len(problems) > 1 else " "
        raise pytest.UsageError(f"{where}:{sep}{sep.join(problems)}")


def crashed_entry(spec_text: str, settings: Settings, error: str, variant: Any = None) -> dict[str, Any]:
    """The report entry of an item whose process died: every field of a result, unknown ones null."""
    from .matrix import Variant
    from .results import ParityResult
    from .specs import parse_spec

    try:
        weights: str | None = parse_spec(spec_text, default_weights=settings.weights).weights
    except OnnxParityError:
        weights = None
    v = variant or Variant(settings.exporter[0], settings.opset[0] if settings.opset else None)
    return ParityResult(model=spec_text, status="error", exporter=v.exporter, opset=v.opset,
                        weights=weights, error=error, variant=v.to_dict()).to_dict()


def summary_lines(results: list[dict[str, Any]]) -> str:
    from .compare import format_table
    from .report import entry_key, variant_columns
    from .specs import short_text

    axes = variant_columns(results)
    # paths cut to file names (the JSON report keeps them whole), unless that would make two models look alike
    short = {m: short_text(m) for m in {d["model"] for d in results}}
    clash = {s for s in short.values() if list(short.values()).count(s) > 1}
    rows = []
    for d in sorted(results, key=entry_key):
        t = d.get("timings") or {}
        v = d.get("variant") or {}
        rows.append([
            d["model"] if short[d["model"]] in clash else short[d["model"]], *(str(v.get(a, "-")) for a in axes), d["status"],
            _num(d.get("max_abs_diff")), _pct(d.get("top1_agreement")),
            d.get("first_divergence") or "-",
            f"{t['export_s']:.1f}" if t.get("export_s") else "-",
            "yes" if d.get("cache_hit") else "no",
        ])
    return format_table(rows, ["model", *axes, "status", "max abs diff", "top-1", "first divergence", "export s", "cache hit"])


def _num(v: Any) -> str:
    return "-" if v is None or isinstance(v, str) else f"{v:.2e}"


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def write_report(path: Path, results: list[dict[str, Any]]) -> None:
    from .report import SCHEMA, entry_key, write_json

    write_json({"schema": SCHEMA, "environment": environment(),
                "models": sorted(results, key=entry_key)}, path)
