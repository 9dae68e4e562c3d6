"""The package's shape: no import cycles, modules one can read, and one implementation per rule.

Each rule test here would have caught a disagreement between two copies of that rule
(sizes: ``2e9`` refused on the command line, accepted by the API; image folders: a
folder of hidden images accepted by the option, refused at run time; the reproducer's
fallback tolerance 1e-4 x RMS against the library's 5e-4 x RMS).
"""
from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import pytest_onnx_parity
from pytest_onnx_parity.errors import SpecError

PACKAGE = Path(pytest_onnx_parity.__file__).parent


def _module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package's modules it imports, counting imports inside functions and TYPE_CHECKING."""
    paths = {_module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        is_pkg = path.name == "__init__.py"
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                root = base[: len(base) - (node.level - 1)] if node.level else []
                mod = ".".join(root + ([node.module] if node.module else [])) if node.level else (node.module or "")
                subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in paths]
                targets = subs or [mod]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            deps.update(t for t in targets if t in paths and t != name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_rule_finds_a_cycle_planted_in_a_package(tmp_path: Path) -> None:
    """The rule as the package test runs it (import_graph, then cycles), on a package with one cycle made of an import
    inside a function and one under TYPE_CHECKING, beside a module that only imports into the cycle."""
    pkg = tmp_path / "planted"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import f\n")
    (pkg / "c.py").write_text("from . import a\n")
    graph = import_graph(pkg)
    assert graph["planted.c"] == {"planted.a"}
    assert cycles(graph) == [["planted.a", "planted.sub.b"]]
    (pkg / "sub" / "b.py").write_text("")
    assert cycles(import_graph(pkg)) == []


def test_no_import_cycles_between_the_package_modules() -> None:
    graph = import_graph()
    assert "pytest_onnx_parity.run" in graph and graph["pytest_onnx_parity.run"]
    assert cycles(graph) == []


#: The package's layers, top to bottom, by top-level module or subpackage. A module imports only
#: modules of its own layer or of the layers below it (counting imports inside functions).
LAYERS = (
    ("entry points", {"__init__", "__main__", "plugin"}),
    ("the run", {"run", "settings", "variants"}),
    ("checks and the report", {"checks", "report"}),
    ("the file, the runtimes, the model", {"onnxfile", "runtime", "preprocessing", "model", "layers", "compare",
                                          "options", "specs", "testing"}),
    ("rules and data", {"axes", "errors", "units", "tolerances", "files", "results", "reproduce"}),
)
MAX_LINES = 400
MAX_FUNCTION_LINES = 80
MAX_TOP_LEVEL_MODULES = 15


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(module: str) -> int:
    room = _room(module)
    found = [i for i, (_, rooms) in enumerate(LAYERS) if room in rooms]
    assert found, f"{module}: its room {room!r} is in no layer of LAYERS (add it where it belongs)"
    return found[0]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Each import that points up the layer table."""
    upward = []
    for name, deps in graph.items():
        for dep in deps:
            if _layer(dep) < _layer(name):
                upward.append(f"{name} ({LAYERS[_layer(name)][0]}) imports {dep} ({LAYERS[_layer(dep)][0]})")
    return sorted(upward)


def test_imports_point_down_the_layer_table() -> None:
    assert upward_imports(import_graph()) == []


def test_the_layer_rule_catches_an_upward_import() -> None:
    """The rule on the package's own graph with two upward imports planted (a check reaching for the run, a rule
    reaching for a check), and one within a layer that it lets pass."""
    graph = import_graph()
    before = set(upward_imports(graph))  # empty when the rule above passes; this test judges the rule only
    graph["pytest_onnx_parity.checks.logits"] = graph["pytest_onnx_parity.checks.logits"] | {
        "pytest_onnx_parity.run", "pytest_onnx_parity.report.render"}
    graph["pytest_onnx_parity.units"] = graph["pytest_onnx_parity.units"] | {"pytest_onnx_parity.checks.weights"}
    assert set(upward_imports(graph)) - before == {
        "pytest_onnx_parity.checks.logits (checks and the report) imports pytest_onnx_parity.run (the run)",
        "pytest_onnx_parity.units (rules and data) imports pytest_onnx_parity.checks.weights (checks and the report)"}


def test_core_modules_never_import_the_pytest_layer() -> None:
    graph = import_graph()
    pytest_layer = {m for m in graph if _room(m) == "plugin"}
    for name, deps in graph.items():
        if name in pytest_layer or name == "pytest_onnx_parity":
            continue
        assert not deps & pytest_layer, f"{name} imports {sorted(deps & pytest_layer)}: arrows point from the plugin down"
    assert "pytest_onnx_parity.plugin" not in graph["pytest_onnx_parity.__main__"]


def test_no_module_is_too_long_to_read() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> dict[str, int]:
    """Each function (method, nested function) of ``source`` longer than ``limit`` lines, by its dotted name:
    from its ``def`` line to the last line of its body, decorators excluded, nested functions counted in their
    parent's lines too."""
    found: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                lines = (child.end_lineno or child.lineno) - child.lineno + 1
                if lines > limit:
                    found[name] = lines
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def test_the_function_rule_finds_a_long_function() -> None:
    """The rule on a planted source: a function one line over the limit (its decorator not counted), a method
    and a nested function over it, beside one exactly at the limit."""
    body = "    x = 1\n"
    at_limit = "def fits():\n" + body * (MAX_FUNCTION_LINES - 1)
    over = "@decorator\ndef long():\n" + body * MAX_FUNCTION_LINES
    method = "class C:\n    def method(self):\n" + ("    " + body) * MAX_FUNCTION_LINES
    nested = "def outer():\n    def inner():\n" + ("    " + body) * MAX_FUNCTION_LINES + "    return inner\n"
    found = long_functions("\n".join([at_limit, over, method, nested]))
    assert found == {"long": MAX_FUNCTION_LINES + 1, "C.method": MAX_FUNCTION_LINES + 1,
                     "outer": MAX_FUNCTION_LINES + 3, "outer.inner": MAX_FUNCTION_LINES + 1}
    assert long_functions(at_limit) == {}


def test_no_function_is_too_long_to_read() -> None:
    """No function of the package over MAX_FUNCTION_LINES lines: split it into named helpers that each do one thing."""
    long = {f"{p.relative_to(PACKAGE)}:{name}": n for p in PACKAGE.rglob("*.py")
            for name, n in long_functions(p.read_text(encoding="utf-8")).items()}
    assert long == {}


def test_the_top_level_holds_few_modules() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def _sources() -> dict[str, str]:
    return {str(p.relative_to(PACKAGE)): p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")}


def test_one_onnx_loader() -> None:
    """Every ONNX file is read through onnxfile/io.py (reproduce.py runs where the package is not installed)."""
    pattern = (r"\bonnx(_lib)?\.(load(_model)?|load_from_string|load_model_from_string|utils\.extract_model)\(|"
               r"\bModelProto\(\)\.ParseFromString|\.ParseFromString\(")
    loads = {name for name, src in _sources().items() if re.search(pattern, src)}
    assert loads <= {"onnxfile/io.py", "reproduce.py"}, loads


def test_one_session_builder() -> None:
    """Sessions are built only by the runners in runtime/ (Python onnxruntime's in runtime/ort.py), and run only
    there: code outside runtime/ opens a runner (runtime.runner.open_runner) and runs it through runtime/."""
    builds = {name for name, src in _sources().items() if "InferenceSession(" in src or "SessionOptions(" in src
              or re.search(r"\bcompile_model\(|\bcore\.read_model\(", src)}
    assert builds <= {"runtime/ort.py", "runtime/openvino.py", "reproduce.py"}, builds
    runs = {name for name, src in _sources().items()
            if re.search(r"\b(session|sess|runner|plain)\.(run|run_with_ort_values)\(", src)}
    assert {n for n in runs if not n.startswith("runtime/")} <= {"reproduce.py"}, runs


def test_no_class_name_checks() -> None:
    found = {name for name, src in _sources().items() if re.search(r"__name__\s*==\s*['\"][A-Z]", src)}
    assert found == set()


#: pytest's private API the package may use, each with its reason (nothing else under ``_pytest``)
PYTEST_PRIVATES = {
    "plugin/rootdir.py": "_pytest.config.findpaths.determine_setup: asks pytest which rootdir it would have "
                         "chosen without a space-form option value (looked up defensively; no public API says it)",
}


def test_no_pytest_privates() -> None:
    for name, src in _sources().items():
        if name in PYTEST_PRIVATES:
            continue
        for pattern in (r"\b_pytest\b", r"_repr_failure_py", r"capturemanager", r"global_and_fixture_disabled",
                        r"config\.option\.", r"hook\.pytest_collectreport\(", r"\.addini\([^)]*type=\"string\"[^)]*\)\s*#\s*bool"):
            assert not re.search(pattern, src), f"{name}: {pattern}"


def test_the_vocabulary_of_the_axes_is_one_leaf() -> None:
    from pytest_onnx_parity import axes
    from pytest_onnx_parity.tolerances import PRECISION_PROFILES

    assert set(PRECISION_PROFILES) == set(axes.PRECISIONS)
    assert import_graph()["pytest_onnx_parity.axes"] == set()
    for name, src in _sources().items():
        if name == "axes.py":
            continue
        for literal in ('"dynamo", "torchscript"', '"fp32", "fp16", "int8"', '"disabled", "basic"',
                        '"always", "on-failure", "never"', '"ORT_DISABLE_ALL"'):
            assert literal not in src, f"{name} spells {literal}: use pytest_onnx_parity.axes"


def test_one_summary_table_and_one_way_to_show_a_figure() -> None:
    from pytest_onnx_parity.report.render import render_markdown, summary_lines

    entry = {"model": "m", "status": "failed", "exporter": "dynamo", "opset": 18, "max_abs_diff": float("inf"),
             "top1_agreement": None, "first_divergence": None, "timings": {}, "cache_hit": False, "checks": []}
    terminal = summary_lines([entry]).splitlines()[-1]
    page = next(line for line in render_markdown({"schema": 1, "models": [entry]}).splitlines() if line.startswith("| `m` "))
    for text in (terminal, page):
        assert "inf" in text and "-" in text, text
    defined = {name for name, src in _sources().items() if "def summary_lines(" in src or "def format_table(" in src}
    assert defined == {"report/render.py", "compare.py"}


def test_every_tolerance_and_threshold_lives_in_tolerances() -> None:
    """Thresholds once, in tolerances.py: the weights check's evidence and per-dtype tolerances, the
    accuracy-drop default of the option, the settings and the run's options."""
    from pytest_onnx_parity.checks import weightmatch
    from pytest_onnx_parity.options import ParityOptions
    from pytest_onnx_parity.settings import OPTIONS, Settings
    from pytest_onnx_parity.tolerances import MAX_ACCURACY_DROP_PP, MIN_WEIGHT_EVIDENCE, WEIGHT_TOLERANCES

    assert weightmatch.MIN_EVIDENCE is MIN_WEIGHT_EVIDENCE or weightmatch.MIN_EVIDENCE == MIN_WEIGHT_EVIDENCE
    assert weightmatch.DEFAULT_TOLERANCES is WEIGHT_TOLERANCES
    drop = next(o for o in OPTIONS if o.noun == "max-accuracy-drop")
    assert drop.default == Settings().max_accuracy_drop == ParityOptions().max_accuracy_drop == MAX_ACCURACY_DROP_PP
    for name, src in _sources().items():
        if name == "tolerances.py":
            continue
        assert not re.search(r"^(MIN_EVIDENCE|DEFAULT_TOLERANCES|\w*TOLERANCES?)\s*[:=]", src, re.M), name
        assert not re.search(r"max_accuracy_drop: float = \d", src), name


def test_options_and_settings_share_one_field_list() -> None:
    from dataclasses import fields

    from pytest_onnx_parity.options import ParityOptions
    from pytest_onnx_parity.settings import Settings

    opts = Settings().parity_options()
    # per run or per spec, not settings: the batch, top-k, the real-image switch, a spec's NAME(ARGS)
    assert set(opts) == {f.name for f in fields(ParityOptions)} - {"batch_size", "topk", "min_agreement", "real_images",
                                                                   "model_args"}
    # every field the two share is carried over as it is (a hand-written mapping that drops or changes one fails here)
    from dataclasses import replace

    derived = {"weights", "use_cache", "embed_preprocessing", "dynamic_size"}  # set per spec or from other settings
    shared = {f.name for f in fields(Settings)} & set(opts) - derived
    carried = [name for name in shared if not isinstance(getattr(Settings(), name), tuple)]  # not a matrix axis
    assert len(carried) > 10, carried
    for name in carried:
        marker = object()
        assert replace(Settings(), **{name: marker}).parity_options()[name] is marker, name


def test_getting_started_names_every_path_and_boolean_ini_key() -> None:
    """The ini keys whose value is a path (relative to the ini file) and the boolean ones, as the settings define them."""
    from pytest_onnx_parity.settings import _PATH_PARSERS, OPTIONS
    from pytest_onnx_parity.specs.values import boolean as _bool

    text = (PACKAGE.parent / "docs" / "getting-started.md").read_text(encoding="utf-8")
    paths = re.search(r"Paths in ini keys \((.*?)\)", text, re.S)
    bools = re.search(r"Boolean ini keys \((.*?)\)", text, re.S)
    assert paths and bools

    def keys(nouns: list[str]) -> set[str]:
        return {"onnx_parity_" + n.replace("-", "_") for n in nouns}
    assert set(re.findall(r"`(onnx_parity_\w+)`", paths.group(1))) == keys([o.noun for o in OPTIONS if o.parse in _PATH_PARSERS])
    assert set(re.findall(r"`(onnx_parity_\w+)`", bools.group(1))) == keys([o.noun for o in OPTIONS if o.parse is _bool])


# -- one rule, one place -------------------------------------------------------------------------------

SIZES = ["2e9", "2E9", "1GiB", "512MB", "512M", "1.5g", "4096", " 8 kib ", "0", "-1", "lots", "1 parsec", "", "nan"]


@pytest.mark.parametrize("text", SIZES)
def test_sizes_parse_alike_on_the_command_line_and_in_the_api(text: str) -> None:
    from pytest_onnx_parity.layers.api import parse_memory
    from pytest_onnx_parity.settings import OPTIONS

    option = next(o for o in OPTIONS if o.noun == "layer-memory")
    try:
        cli: object = option.parse(text)
    except ValueError:
        cli = "refused"
    try:
        api: object = parse_memory(text)
    except SpecError:
        api = "refused"
    assert cli == api
    if text.strip().lower() in ("2e9",):
        assert api == 2_000_000_000


def test_an_image_folder_is_judged_alike_by_the_option_and_the_run(tmp_path: Path) -> None:
    from pytest_onnx_parity.errors import ImageError
    from pytest_onnx_parity.preprocessing.images import bundled_image_paths, find_images
    from pytest_onnx_parity.settings import OPTIONS

    option = next(o for o in OPTIONS if o.noun == "images")
    hidden = tmp_path / "hidden"
    (hidden / ".thumbs").mkdir(parents=True)
    photo = bundled_image_paths()[0]
    shutil.copyfile(photo, hidden / f".{photo.name}")
    shutil.copyfile(photo, hidden / ".thumbs" / photo.name)
    visible = tmp_path / "visible"
    visible.mkdir()
    shutil.copyfile(photo, visible / photo.name.upper())
    for folder in (hidden, visible, tmp_path / "missing"):
        try:
            find_images(folder)
            run_ok = True
        except ImageError:
            run_ok = False
        try:
            option.parse(str(folder))
            option_ok = True
        except ValueError:
            option_ok = False
        assert option_ok == run_ok, folder
    assert option.parse(str(visible)) == str(visible)


@pytest.mark.parametrize("atol,rtol", [(1e-3, None), (None, 1e-3), (-1.0, 0.0), (float("nan"), 0.0)])
def test_every_entry_point_refuses_the_same_tolerance_pairs(atol: float | None, rtol: float | None) -> None:
    from pytest_onnx_parity.compare import compare_logits, compare_topk
    from pytest_onnx_parity.options import ParityOptions
    from pytest_onnx_parity.tolerances import layer_tolerance

    x = np.ones((2, 5), np.float32)
    for call in (lambda: compare_logits(x, x, atol=atol, rtol=rtol), lambda: compare_topk(x, x, atol=atol, rtol=rtol),
                 lambda: ParityOptions.from_kwargs(atol=atol, rtol=rtol), lambda: layer_tolerance(atol, rtol)):
        with pytest.raises(SpecError):
            call()


def test_compare_layers_refuses_one_tolerance_without_the_other() -> None:
    from pytest_onnx_parity import compare_layers

    with pytest.raises(SpecError, match="together"):
        compare_layers(object(), "missing.onnx", np.zeros((1, 3, 8, 8), np.float32), atol=1e-3)


def test_the_option_parser_applies_the_same_pair_rule(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--onnx-parity", "--onnx-parity-rtol", "1e-3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "give atol and rtol together" in result.stderr.str()


def test_safe_names_are_one_rule() -> None:
    from pytest_onnx_parity.files import safe_name

    assert safe_name("hf-hub:org/repo=/ckpt/w.safetensors") == "hf-hub_org_repo_ckpt_w.safetensors"
    assert safe_name("..") == "model" and safe_name("a" * 300, 80) == "a" * 80
    import pytest_onnx_parity.report.bundle as artifacts
    import pytest_onnx_parity.onnxfile.cache as cache
    import pytest_onnx_parity.plugin.gate as gate

    for module in (artifacts, cache, gate):
        assert not {"slug", "_safe"} & set(vars(module)), module.__name__
        assert getattr(module, "safe_name", safe_name) is safe_name


def test_the_gate_writes_the_report_schema_that_merge_reads(tmp_path: Path) -> None:
    from pytest_onnx_parity.report.schema import write_report
    from pytest_onnx_parity.report.schema import SCHEMA, load_report

    path = tmp_path / "r.json"
    write_report(path, [])
    assert load_report(path)["schema"] == SCHEMA


def test_reports_get_the_mode_any_new_file_gets(tmp_path: Path) -> None:
    import os

    from pytest_onnx_parity.report.schema import write_json

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    write_json({"schema": 1, "environment": {}, "models": []}, tmp_path / "r.json")
    assert os.stat(tmp_path / "r.json").st_mode & 0o777 == os.stat(plain).st_mode & 0o777


def test_the_parity_data_config_has_the_shared_field_list() -> None:
    from pytest_onnx_parity.preprocessing.dataconfig import DATA_CONFIG_FIELDS

    assert DATA_CONFIG_FIELDS == ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    spelled = {name for name, src in _sources().items() if '"input_size", "interpolation"' in src}
    assert spelled == {"preprocessing/dataconfig.py"}


def test_one_default_batch_for_the_fixture_and_the_run() -> None:
    import inspect

    from pytest_onnx_parity.runtime.forward import DEFAULT_BATCH, random_batch
    from pytest_onnx_parity.options import ParityOptions

    assert ParityOptions().batch_size == DEFAULT_BATCH
    assert inspect.signature(random_batch).parameters["batch_size"].default == DEFAULT_BATCH
    cfg = {"input_size": (3, 8, 8), "mean": (0.5,) * 3, "std": (0.5,) * 3}
    assert random_batch(cfg).shape == (DEFAULT_BATCH, 3, 8, 8)


def test_one_arbitration() -> None:
    """Only checks/arbitration.py calls the ill-conditioning probes and words "inconclusive ... unstable"."""
    for name, src in _sources().items():
        if name in ("checks/arbitration.py", "checks/conditioning.py"):
            continue
        assert "torch_sensitivity(" not in src and "float64_arbitration(" not in src, name
        assert "ARBITRATION_FACTOR" not in src or name == "tolerances.py", name
        assert "model itself is that unstable" not in src, name
    src = (PACKAGE / "checks" / "arbitration.py").read_text()
    assert "torch_sensitivity(" in src and "float64_arbitration(" in src


# -- the reproducer: a module of the package, with the library's tolerances -----------------------------

def test_the_reproducer_is_linted_as_code() -> None:
    ruff = shutil.which("ruff")
    assert ruff is not None, "ruff is a test dependency (pip install -e '.[test]')"
    run = subprocess.run([ruff, "check", "--no-cache", "--select", "E9,F,B", str(PACKAGE / "reproduce.py")],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def test_reproducer_defaults_are_the_librarys(tmp_path: Path) -> None:
    from pytest_onnx_parity import reproduce
    from pytest_onnx_parity.report.bundle import _default_tolerances
    from pytest_onnx_parity.tolerances import logits_tolerance

    logits = np.random.default_rng(0).standard_normal((2, 10)).astype(np.float32) * 3
    meta = {"default_tolerance": _default_tolerances()}
    atol, rtol = reproduce.default_tolerance(meta, logits)
    lib = logits_tolerance(logits)
    lib_atol, lib_rtol = lib.atol, lib.rtol
    assert (atol, rtol) == pytest.approx((lib_atol, lib_rtol))
    # a difference of 3e-4 x RMS: inside the library's tolerance, outside the old fallback's 1e-4 x RMS
    rms = float(np.sqrt(np.mean(logits.astype(np.float64) ** 2)))
    moved = logits + np.float32(3e-4 * rms)
    assert reproduce.compare(logits, moved, atol, rtol)["mismatched"] == 0
    with pytest.raises(KeyError, match="--atol"):
        reproduce.default_tolerance({}, logits)


def test_reproducer_never_calls_nan_equal() -> None:
    from pytest_onnx_parity import reproduce

    e = np.array([[1.0, np.nan, np.inf]])
    assert reproduce.compare(e, e.copy(), 0.1, 0.1)["mismatched"] == 1  # NaN != NaN; Inf == Inf
    assert reproduce.compare(e[:, :1], e[:, :1] + 0.01, 0.1, 0.1)["mismatched"] == 0
    assert reproduce.compare(e[:, 2:], -e[:, 2:], 0.1, 0.1)["mismatched"] == 1


def test_bundle_without_gate_figures_uses_the_library_tolerance(tmp_path: Path) -> None:
    """A bundle whose result has no logits figures: reproduce.py applies 5e-4 x RMS, as the gate would."""
    from pytest_onnx_parity.report.bundle import write_bundle

    logits = np.random.default_rng(1).standard_normal((2, 10)).astype(np.float32)
    rms = float(np.sqrt(np.mean(logits.astype(np.float64) ** 2)))
    result = SimpleNamespace(model="m", status="failed", exporter=None, opset=None, weights="random", checks=[],
                             check=lambda name: None, to_dict=lambda: {"model": "m"})
    state = SimpleNamespace(result=result, model=None, export=None, options=None, inputs=None)
    out = write_bundle(state, tmp_path)
    np.savez(out / "inputs.npz", input=np.zeros((2, 3), np.float32))
    np.savez(out / "outputs.npz", torch=logits)
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["atol"] is None and meta["default_tolerance"]["float32"] == {"rtol": 1e-4, "atol_factor": 5e-4}
    assert (out / "reproduce.py").read_text() == (PACKAGE / "reproduce.py").read_text()
    sys.path.insert(0, str(out))
    try:
        import importlib

        bundled = importlib.import_module("reproduce")
        atol, _ = bundled.default_tolerance(meta, logits)
    finally:
        sys.path.remove(str(out))
        sys.modules.pop("reproduce", None)
    assert atol == pytest.approx(5e-4 * rms)


# -- the fixtures' export memo --------------------------------------------------------------------------

def test_fixture_store_keys_a_given_module_by_the_module_not_its_id() -> None:
    from pytest_onnx_parity.plugin import _Store
    from pytest_onnx_parity.settings import Settings

    store = _Store(Settings())
    a, b = object(), object()
    ka = store.model_key({"model": a, "seed": 0})
    kb = store.model_key({"model": b, "seed": 0})
    assert ka != kb and ka[1] is a
    assert store.model_key({"model": "resnet18", "seed": 0}) == ("spec", "resnet18", "random", 0, (), ())
    # the marker's model_args and data_config are part of the key: another model, another entry
    assert store.model_key({"model": "resnet18", "seed": 0, "model_args": {"num_classes": 0}}) != \
        store.model_key({"model": "resnet18", "seed": 0})
    assert store.model_key({"model": "resnet18(num_classes=0)=a.pth", "seed": 0})[2] is None  # its own weights


# -- the public contract ---------------------------------------------------------------------------------

SPEC_NAMES = ["load_model", "export_onnx", "OnnxExport", "read_data_config", "preprocess", "assert_logits_close",
              "assert_topk_agreement", "compare_layers", "assert_layers_close", "check_parity", "stamp_onnx",
              "resolve_data_config", "preprocessing_graph", "OnnxParityError", "MissingMetadataError"]


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_every_public_name_of_the_spec_imports_from_the_package(name: str) -> None:
    assert getattr(pytest_onnx_parity, name) is not None
    assert name in pytest_onnx_parity.__all__


def tolerance_makers(sources: dict[str, str]) -> dict[str, list[str]]:
    """Each module outside tolerances.py that defines a function resolving a tolerance (``def ..._tolerance(``) or
    builds a ``Tolerance`` itself."""
    found: dict[str, list[str]] = {}
    for name, src in sources.items():
        if name == "tolerances.py":
            continue
        hits = re.findall(r"def (\w*tolerance\w*)\(", src) + re.findall(r"(?<![\w.])(Tolerance)\(", src)
        if hits:
            found[name] = hits
    return found


def test_one_tolerance_api() -> None:
    """A tolerance comes from tolerances.logits_tolerance or tolerances.layer_tolerance (a ``Tolerance``: atol, rtol,
    its source); the run's context asks the first with its options, and the bundle writes the library's defaults
    for reproduce.py, which runs without the package. Nothing else resolves one."""
    assert tolerance_makers(_sources()) == {"checks/context.py": ["logits_tolerance"],
                                            "report/bundle.py": ["_tolerances", "_default_tolerances"],
                                            "reproduce.py": ["default_tolerance"]}
    planted = {"checks/new.py": "def e2e_tolerance(e):\n    return Tolerance(1e-3 * rms(e), 1e-3)\n"}
    assert tolerance_makers(planted) == {"checks/new.py": ["e2e_tolerance", "Tolerance"]}
