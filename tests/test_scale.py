"""The gate at scale: xdist, shards, merged reports, rendered tables, JUnit figures, reproducer bundles.

Runs of the gate go through pytester on tiny timm models (``test_*``) with the
torchscript exporter and a shared export cache, so each model is exported once
per session. xdist runs use ``runpytest_subprocess``.
"""
from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy  # noqa: F401 - imported before any pytester snapshot: numpy cannot be loaded twice per process
import onnxruntime  # noqa: F401
import pytest

from pytest_onnx_parity.__main__ import main as cli_main
from pytest_onnx_parity.report.render import group_reasons, reason_key, render_html, render_markdown
from pytest_onnx_parity.report.schema import load_report, merge_reports

THREE = ["test_vit", "test_convnext", "test_efficientnet"]
FOUR = [*THREE, "test_resnet"]
JUNIT_PROPERTIES = {"max_abs_diff", "top1_agreement", "first_divergence", "export_s", "cache_hit"}


@pytest.fixture(scope="module")
def warm(export_cache: str) -> str:
    """Import what a gate run imports, once, in this process: in-process pytester runs drop the
    modules they import first, and numpy/torch cannot be loaded twice in one process."""
    from pytest_onnx_parity import check_parity

    result = check_parity("test_resnet", exporter="torchscript", layers="never", cache_dir=export_cache)
    assert result.passed, result.failure_message()
    return export_cache


def gate_args(cache: str | Path, models: list[str], *more: str) -> list[str]:
    return ["-p", "no:cacheprovider", "--onnx-parity", f"--onnx-parity-models={','.join(models)}",
            f"--onnx-parity-cache-dir={cache}", "--onnx-parity-exporter=torchscript",
            "--onnx-parity-layers=never", *more]


def report_models(path: Path) -> list[str]:
    doc = json.loads(path.read_text())
    assert doc["schema"] == 1
    return [e["model"] for e in doc["models"]]


def summary_count(result: pytest.RunResult) -> int:
    return sum(1 for line in result.outlines if re.match(r"=+ onnx-parity summary =+$", line))


def junit_properties(path: Path) -> dict[str, dict[str, str]]:
    root = ET.parse(path).getroot()
    out = {}
    for case in root.iter("testcase"):
        out[case.get("name", "")] = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
    return out


def write_report(path: Path, models: list[dict[str, Any]], env: dict[str, str] | None = None) -> Path:
    path.write_text(json.dumps({"schema": 1, "environment": env or {"torch": "2.14.1", "timm": "1.0.31"},
                                "models": models}))
    return path


def entry(model: str, status: str = "passed", **kw: Any) -> dict[str, Any]:
    base = {"model": model, "status": status, "exporter": "dynamo", "opset": 18, "max_abs_diff": 1.5e-6,
            "top1_agreement": 1.0, "first_divergence": None, "cache_hit": False, "timings": {"export_s": 1.0},
            "error": None, "checks": []}
    base.update(kw)
    return base


# -- xdist ----------------------------------------------------------------------------------------------


def test_xdist_two_workers_give_one_report_and_one_summary(pytester: pytest.Pytester) -> None:
    # a private cache, and test_vit twice under two specs with the same export: the workers share the
    # cache, so exactly one of them builds it
    models = [*THREE, "test_vit=random"]
    cache = pytester.path / "cache"
    report, junit = pytester.path / "r.json", pytester.path / "junit.xml"
    result = pytester.runpytest_subprocess(
        "-n", "2", *gate_args(cache, models, f"--onnx-parity-report={report}", f"--junitxml={junit}"))
    result.assert_outcomes(passed=4)
    assert sorted(report_models(report)) == sorted(models)
    hits = {e["model"]: e["cache_hit"] for e in json.loads(report.read_text())["models"]}
    assert sorted([hits["test_vit"], hits["test_vit=random"]]) == [False, True]
    assert len([p for p in cache.iterdir() if p.is_dir() and p.name.startswith("test_vit-")]) == 1
    assert summary_count(result) == 1
    assert sum(1 for line in result.outlines if line.startswith("onnx-parity report:")) == 1
    summary = result.outlines[result.outlines.index(next(l for l in result.outlines if "onnx-parity summary" in l)):]
    for m in models:  # each model once in the table
        assert sum(1 for line in summary if line.split()[:1] == [m]) == 1, m
    # the figures travel back from the workers into the JUnit XML
    props = junit_properties(junit)
    assert sorted(props) == sorted(f"onnx-parity[{m}]" for m in models)
    for name, p in props.items():
        assert JUNIT_PROPERTIES <= set(p), (name, p)
        assert float(p["max_abs_diff"]) < 1e-3 and float(p["top1_agreement"]) == 1.0


XDIST_PROBE = """
def pytest_report_header(config):
    return f"xdist loaded: {config.pluginmanager.has_plugin('xdist')}"
"""


def test_xdist_loaded_but_unused(pytester: pytest.Pytester, warm: str) -> None:
    export_cache = warm
    report = pytester.path / "r.json"
    pytester.makeconftest(XDIST_PROBE)
    result = pytester.runpytest(*gate_args(export_cache, THREE, f"--onnx-parity-report={report}"), "-v", "-s")
    result.assert_outcomes(passed=3)
    assert "xdist loaded: True" in result.outlines
    assert sorted(report_models(report)) == sorted(THREE)
    assert summary_count(result) == 1
    # -v -s shows each model's phases while it runs (with output captured they go into the report section)
    result.stdout.fnmatch_lines(["onnx-parity[[]test_vit[]]*[[]build[]]*[[]checks[]]*PASSED*"])


def test_without_xdist(pytester: pytest.Pytester, warm: str) -> None:
    export_cache = warm
    report, junit = pytester.path / "r.json", pytester.path / "junit.xml"
    pytester.makeconftest(XDIST_PROBE)
    result = pytester.runpytest(
        "-p", "no:xdist", *gate_args(export_cache, THREE, f"--onnx-parity-report={report}", f"--junitxml={junit}"))
    result.assert_outcomes(passed=3)
    assert "xdist loaded: False" in result.outlines
    assert sorted(report_models(report)) == sorted(THREE)
    assert summary_count(result) == 1
    props = junit_properties(junit)
    assert len(props) == 3 and all(JUNIT_PROPERTIES <= set(p) for p in props.values())
    assert {p["first_divergence"] for p in props.values()} <= {"None", ""}
    assert {p["cache_hit"] for p in props.values()} <= {"True", "False"}


def test_report_header_shows_versions_and_settings(pytester: pytest.Pytester, warm: str) -> None:
    export_cache = warm
    result = pytester.runpytest("-p", "no:xdist", *gate_args(export_cache, ["test_resnet"]), "--collect-only")
    result.stdout.fnmatch_lines(["onnx-parity: torch *", "onnx-parity cpu: * (*; *)",
                                 "onnx-parity settings: exporter=torchscript*layers=never*"])
    from pytest_onnx_parity.runtime.environment import cpu_flags_text

    assert any(line.endswith(f"; {cpu_flags_text()})") for line in result.outlines if line.startswith("onnx-parity cpu: "))
    header = next(line for line in result.outlines if line.startswith("onnx-parity: torch "))
    shown = dict(part.rsplit(" ", 1) for part in header[len("onnx-parity: "):].split(", "))
    for dist in ("torch", "timm", "onnx", "onnxruntime"):
        assert shown.get(dist) == md.version(dist), (dist, header)


# -- shards, merge, render ------------------------------------------------------------------------------


def test_shards_are_disjoint_balanced_and_merge_to_the_unsharded_run(pytester: pytest.Pytester, warm: str) -> None:
    export_cache = warm
    full = pytester.path / "full.json"
    pytester.runpytest("-p", "no:xdist", *gate_args(export_cache, FOUR, f"--onnx-parity-report={full}")).assert_outcomes(passed=4)
    shards = []
    for k in (1, 2, 3):
        path = pytester.path / f"shard-{k}.json"
        res = pytester.runpytest("-p", "no:xdist", *gate_args(export_cache, FOUR, f"--onnx-parity-report={path}",
                                                                 f"--onnx-parity-shard={k}/3"))
        assert res.ret == 0
        shards.append(path)
    sets = [set(report_models(p)) for p in shards]
    assert all(a.isdisjoint(b) for i, a in enumerate(sets) for b in sets[i + 1:])
    assert max(map(len, sets)) - min(map(len, sets)) <= 1 and min(map(len, sets)) >= 1
    merged_path = pytester.path / "all.json"
    assert cli_main(["merge", *map(str, shards), "-o", str(merged_path)]) == 0
    merged = load_report(merged_path)
    unsharded = load_report(full)
    assert [e["model"] for e in merged["models"]] == [e["model"] for e in unsharded["models"]]
    assert [e["status"] for e in merged["models"]] == [e["status"] for e in unsharded["models"]]
    assert "notes" not in merged  # no duplicates, same environment
    # the rendered table holds every model
    md_path, html_path = pytester.path / "t.md", pytester.path / "t.html"
    assert cli_main(["render", str(merged_path), "--markdown", str(md_path), "--html", str(html_path)]) == 0
    md_text, html_text = md_path.read_text(), html_path.read_text()
    assert "| model | status | exporter | opset | max abs diff | top-1 agreement | first divergence |" in md_text
    for m in FOUR:
        assert re.search(rf"^\| `{m}` \| passed \| torchscript \| \d+ \| [0-9.e+-]+ \| 100\.0% \| - \|$", md_text, re.M), m
        assert f"<code>{m}</code>" in html_text
    assert html_text.startswith("<!DOCTYPE html>") and "<table" in html_text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html_text)  # self-contained


def test_merge_keeps_one_entry_per_model_and_records_environments(tmp_path: Path) -> None:
    a = write_report(tmp_path / "a.json", [entry("resnet18"), entry("vit_tiny", "failed")])
    b = write_report(tmp_path / "b.json", [entry("vit_tiny", "passed"), entry("convnext_atto")],
                     env={"torch": "2.13.0", "timm": "1.0.31"})
    merged = merge_reports([a, b])
    assert [(e["model"], e["status"]) for e in merged["models"]] == [
        ("convnext_atto", "passed"), ("resnet18", "passed"), ("vit_tiny", "passed")]
    assert merged["sources"] == [str(a), str(b)]
    assert any("vit_tiny" in n and "kept the later one" in n for n in merged["notes"])
    assert any("environments differ in torch (2.13.0 / 2.14.1)" in n for n in merged["notes"])
    assert [e["environment"]["torch"] for e in merged["environments"]] == ["2.14.1", "2.13.0"]
    # the same exporter exception on two models is one group
    err = "dynamo exporter failed: TorchExportError: Failed to export the model with torch.export. {} <- " \
          "GuardOnDataDependentSymNode: Could not guard on data-dependent expression Eq(u{}, {}) (unhinted: Eq(u{}, {}))"
    rep = {"schema": 1, "environment": {}, "models": [
        entry("levit_128s", "error", error=err.format("This is step 1/3.", 12, 196, 12, 196)),
        entry("efficientvit_m0", "error", error=err.format("This is step 1/3.", 7, 49, 7, 49)),
        entry("foo", "failed", checks=[{"name": "logits", "status": "failed", "message": "not close"}]),
    ]}
    groups = group_reasons(rep)
    assert [(g["status"], sorted(g["models"])) for g in groups] == [
        ("error", ["efficientvit_m0", "levit_128s"]), ("failed", ["foo"])]
    assert "GuardOnDataDependentSymNode" in groups[0]["reason"]
    assert reason_key("timm could not build 'resnet18': x", "resnet18") == "timm could not build '<model>': x"
    coloured = "dynamo exporter failed: ConversionError: Failed. \x1b[96mThis is step 3/3\x1b[0m of exporting"
    assert "\x1b" not in reason_key(coloured) and "\x1b" not in render_markdown(
        {"schema": 1, "environment": {}, "models": [entry("m", "error", error=coloured)]})


def test_render_escapes_text(tmp_path: Path) -> None:
    rep = {"schema": 1, "environment": {"torch": "2.14.1"}, "models": [
        entry("a<b>", "error", error="<script>alert(1)</script> | pipe"), entry("ok")]}
    page = render_html(rep)
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<code>a&lt;b&gt;</code>" in page
    md_text = render_markdown(rep)
    assert "1 passed, 0 failed, 1 errors" in md_text and "\\| pipe" in md_text
    assert "<script>" not in md_text


def test_the_html_full_reason_holds_the_messages_that_name_the_fix() -> None:
    """Not only "failed checks: weights, logits": each failing check's own message, escaped and cut."""
    import html

    weights = ("this file does not hold vit_tiny_patch16_224's weights: 0 of its 152 weights matched <a>.\n"
               "Check the file against the model it was exported from (--model THAT_NAME=/path/to/its/checkpoint).")
    table = "\n".join(f"  {i}  blocks.{i}.mlp.fc1  Linear  {i}.5" for i in range(400))  # a long per-layer table
    rep = {"schema": 1, "environment": {}, "models": [entry("vit_tiny_patch16_224=vit.safetensors@resnet18.onnx", "failed",
        checks=[{"name": "weights", "status": "failed", "message": weights},
                {"name": "data_config", "status": "passed", "message": "equal"},
                {"name": "layers", "status": "failed", "message": "first divergence at blocks.0\n" + table}])]}
    page = render_html(rep)
    details = page[page.index("<details>"):page.index("</details>")]
    assert html.escape("this file does not hold vit_tiny_patch16_224's weights: 0 of its 152 weights matched <a>.") in details
    assert html.escape("--model THAT_NAME=/path/to/its/checkpoint") in details
    assert "first divergence at blocks.0" in details and "<a>" not in details  # escaped
    assert "blocks.399.mlp.fc1" not in details and "more characters in the JSON report" in details  # cut, saying so
    assert len(details) < 8000
    assert details.index("does not hold") < details.index("first divergence")  # in the checks' order: weights first
    assert "data_config" not in details.split("</summary>", 1)[1]  # passed checks are not reasons
    # the group heading stays the short key
    assert "failed (1): failed checks: weights, layers" in page


def test_cli_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    old = write_report(tmp_path / "old.json", [])
    old.write_text(json.dumps({"schema": 7, "models": []}))
    cases = [(["merge", str(tmp_path / "missing.json"), "-o", str(tmp_path / "x.json")], "missing.json: no such file"),
             (["render", str(bad), "--html", str(tmp_path / "x.html")], "bad.json: not valid JSON"),
             (["merge", str(old)], "unsupported report schema 7"),
             (["render", str(tmp_path)], "is a folder")]
    for argv, message in cases:
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert cli_main(["frobnicate"]) == 2
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "x.html").exists()
    # the module entry point works as a command
    good = write_report(tmp_path / "good.json", [entry("resnet18")])
    proc = subprocess.run([sys.executable, "-m", "pytest_onnx_parity", "render", str(good)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "| `resnet18` | passed |" in proc.stdout


# -- reproducer bundles ---------------------------------------------------------------------------------

# A planted exporter fault: the exported file gets the classifier weights x1.5 while the torch
# model keeps its own; nothing else changes. Undone at unconfigure (in-process runs share the
# module); its exports go to a private cache.
FAULTY_EXPORT_CONFTEST = """
import torch
import pytest_onnx_parity.onnxfile.export as _export

_orig = _export._export_to


def _faulty_export_to(model, target, **kwargs):
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        head.weight.mul_(1.5)
    try:
        return _orig(model, target, **kwargs)
    finally:
        with torch.no_grad():
            head.weight.div_(1.5)


def pytest_configure(config):
    _export._export_to = _faulty_export_to


def pytest_unconfigure(config):
    _export._export_to = _orig
"""


def faulty_args(pytester: pytest.Pytester, *more: str) -> list[str]:
    return ["-p", "no:xdist", "-p", "no:cacheprovider", "--onnx-parity", "--onnx-parity-models=test_resnet",
            f"--onnx-parity-cache-dir={pytester.path / 'private-cache'}", "--onnx-parity-exporter=torchscript", *more]


def clean_python(*code_or_args: str) -> list[str]:
    """An interpreter without the plugin: no site processing (so no editable install), only the
    site-packages folders of numpy and onnxruntime on the path, torch and timm blocked."""
    paths = sorted({str(Path(numpy.__file__).parents[1]), str(Path(onnxruntime.__file__).parents[1])})
    boot = f"import sys; sys.path[:0] = {paths!r}; sys.modules['torch'] = None; sys.modules['timm'] = None; "
    return [sys.executable, "-I", "-S", "-c", boot + code_or_args[0], *code_or_args[1:]]


def test_failing_model_bundle_reproduces_without_the_plugin(pytester: pytest.Pytester, warm: str) -> None:
    pytester.makeconftest(FAULTY_EXPORT_CONFTEST)
    art = pytester.path / "artifacts"
    result = pytester.runpytest(*faulty_args(pytester, "--onnx-parity-layers=on-failure", f"--onnx-parity-artifacts={art}"))
    result.assert_outcomes(failed=1)
    bundle = art / "test_resnet"
    for name in ("model.onnx", "inputs.npz", "outputs.npz", "layers.txt", "result.json", "reproduce.py", "bundle.json"):
        assert (bundle / name).is_file(), name
    res = json.loads((bundle / "result.json").read_text())
    assert res["status"] == "failed" and res["first_divergence"] == "fc"
    assert "fc" in (bundle / "layers.txt").read_text()
    assert json.loads((bundle / "bundle.json").read_text())["problems"] == []

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    probe = subprocess.run(clean_python("import numpy, onnxruntime\ntry:\n import pytest_onnx_parity\nexcept ImportError:"
                                        "\n print('no plugin')\nelse:\n print('plugin importable')"),
                           cwd=bundle, env=env, capture_output=True, text=True, check=False)
    assert probe.stdout.strip() == "no plugin", probe.stdout + probe.stderr
    run = subprocess.run(clean_python("sys.argv = ['reproduce.py']; import runpy; "
                                      "runpy.run_path('reproduce.py', run_name='__main__')"),
                         cwd=bundle, env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 1, run.stdout + run.stderr
    out = run.stdout
    assert re.search(r"max abs diff:\s+\d", out) and re.search(r"mismatched:\s+[1-9]\d* / \d+000 ", out), out
    assert "top-1 agreement:" in out and "MISMATCH" in out


def test_write_bundle_records_problems_instead_of_raising(tmp_path: Path) -> None:
    from pytest_onnx_parity.report.bundle import write_bundle
    from pytest_onnx_parity.results import ParityResult

    state = SimpleNamespace(result=ParityResult(model="resnet18=/ckpt/../x.pth", status="failed"), model=None,
                            export=SimpleNamespace(path=tmp_path / "gone.onnx"), options=None)
    out = write_bundle(state, tmp_path / "art")
    assert out.parent == tmp_path / "art" and out.name == "resnet18_ckpt_.._x.pth"
    meta = json.loads((out / "bundle.json").read_text())
    assert any("ONNX file: not available" in p for p in meta["problems"])
    assert (out / "reproduce.py").is_file() and (out / "result.json").is_file()
    # the script says the bundle is unusable instead of a traceback
    run = subprocess.run([sys.executable, "reproduce.py"], cwd=out, capture_output=True, text=True, check=False)
    assert run.returncode == 2 and "incomplete" in run.stdout
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(OSError, match="cannot write the reproducer bundle of resnet18"):
        write_bundle(state, blocker / "art")


# -- robustness of the gate ----------------------------------------------------------------------------


def test_unwritable_artifacts_folder_keeps_the_parity_failure(pytester: pytest.Pytester, warm: str) -> None:
    pytester.makeconftest(FAULTY_EXPORT_CONFTEST)
    (pytester.path / "blocker").write_text("a file where the artifacts folder should go")
    result = pytester.runpytest(*faulty_args(pytester, "--onnx-parity-layers=never",
                                             f"--onnx-parity-artifacts={pytester.path / 'blocker' / 'art'}"))
    result.assert_outcomes(failed=1)
    text = "\n".join(result.outlines)
    assert "test_resnet: the ONNX file's weights differ from the model's" in text  # the planted 1.5x head
    assert "cannot write the reproducer bundle of test_resnet" in text
    assert "Traceback" not in text and "report/bundle.py" not in text  # the module that writes bundles


CRASH_CONFTEST = """
import os


def pytest_runtest_setup(item):  # the gate item does its work in setup
    if item.name == "onnx-parity[test_resnet]" and hasattr(item.config, "workerinput"):
        os._exit(3)  # a worker dies the way an OOM kill or a segfault in a runtime would
"""


def test_a_crashed_worker_loses_only_its_current_model(pytester: pytest.Pytester, export_cache: str) -> None:
    pytester.makeconftest(CRASH_CONFTEST)
    report = pytester.path / "r.json"
    result = pytester.runpytest_subprocess("-n", "1", *gate_args(export_cache, ["test_vit", "test_resnet"],
                                                                  f"--onnx-parity-report={report}"))
    result.assert_outcomes(passed=1, failed=1)
    models = {e["model"]: e for e in json.loads(report.read_text())["models"]}
    assert models["test_vit"]["status"] == "passed"
    assert models["test_resnet"]["status"] == "error" and "crashed" in models["test_resnet"]["error"]
    assert summary_count(result) == 1
