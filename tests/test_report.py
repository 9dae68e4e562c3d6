"""The JSON report: its JSON Schema, compact entries with the per-layer series beside them, the pages and the plots."""
from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_onnx_parity"
#: the gate's report of 50 models must stay under 2 MB: each entry's share
PER_MODEL_BUDGET = 2_000_000 // 50


def report(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"schema": 1, "environment": {"torch": "2.x"}, "models": list(entries)}


def layer_row(i: int, failing_from: int | None) -> dict[str, Any]:
    """A layer row as LayerResult.to_dict writes it; from ``failing_from`` on each row fails (what a planted fault
    early in a deep model does)."""
    from pytest_onnx_parity.layers.results import LayerResult

    bad = failing_from is not None and i >= failing_from
    own = 0.0 if i % 3 == 0 else 3e-8 * (1 + i % 7)
    return LayerResult(name=f"stages.{i // 40}.blocks.{i % 40}.mlp.fc{1 + i % 2}", module_type="Linear",
                       onnx_ops=("MatMul", "Add"), onnx_value=f"/stages.{i}/MatMul_output_0", shape=(1, 197, 768),
                       max_abs_diff=0.5 if bad else 2e-7, max_rel_diff=1e-6, cosine=1.0, rms=0.3, tolerance=3e-4,
                       passed=not bad, upstream_rel=1e-7, own_diff=0.5 if i == failing_from else own,
                       own_tolerance=3e-4, own_excess=own).to_dict()


def big_entry(name: str, n_layers: int = 600, failing_from: int | None = 300) -> dict[str, Any]:
    """A deep model's entry at its largest: every layer after a planted fault fails, a long failure message, a
    headroom check over every module."""
    rows = [layer_row(i, failing_from) for i in range(n_layers)]
    layers = {"name": "layers", "status": "failed" if failing_from is not None else "passed",
              "message": "first divergence ...\n" + "\n".join(f"{r['name']}  {r['max_abs_diff']}" for r in rows),
              "first_divergence": rows[failing_from]["name"] if failing_from is not None else None,
              "layers": rows, "coverage": {"compared": n_layers, "comparable": n_layers},
              "uncompared": [{"name": f"drop.{i}", "module_type": "Dropout", "reason": "identity in eval mode"}
                             for i in range(n_layers // 2)]}
    modules = {r["name"]: {"torch_max": float(i), "closest_value": float(i), "overflows": False, "nonfinite": False,
                           "inside": {"sum of squares (torch)": 1.0}} for i, r in enumerate(rows)}
    headroom = {"name": "headroom", "status": "passed", "message": "none within 16x", "modules": modules}
    return {"model": name, "status": layers["status"], "exporter": "dynamo", "opset": 18, "weights": "random",
            "data_config": {"input_size": [3, 224, 224], "interpolation": "bicubic", "mean": [0.5] * 3, "std": [0.5] * 3,
                            "crop_pct": 0.9, "crop_mode": "center"}, "data_config_source": "pretrained_cfg",
            "max_abs_diff": 0.5, "top1_agreement": 1.0, "first_divergence": layers["first_divergence"],
            "cache_hit": False, "timings": {"total_s": 1.0}, "onnx_path": "/x/model.onnx", "error": None,
            "checks": [{"name": "logits", "status": "passed", "message": "close"}, headroom, layers],
            "variant": {"exporter": "dynamo", "opset": None, "precision": "fp32", "ort_opt": "all",
                        "provider": "CPUExecutionProvider", "image_size": None, "preprocessing": "external",
                        "simplifier": "none"}, "output_kind": "logits"}


# -- the JSON Schema ------------------------------------------------------------------------------------------


def test_the_suite_validates_every_report_it_writes(reports_written: Any, tmp_path: Path) -> None:
    """The autouse fixture (conftest.py) sees what write_json writes: a report breaking the schema is caught."""
    from pytest_onnx_parity.report.schema import write_json

    write_json(report(big_entry("good")), tmp_path / "good.json")
    assert {Path(p).name for p in reports_written.checked} == {"good.json", "good.layers.json"}
    assert reports_written.problems == []
    write_json(report({"model": "m", "status": "fine", "checks": []}), tmp_path / "bad.json")
    assert len(reports_written.problems) == 1 and "models/0/status" in reports_written.problems[0]
    reports_written.problems.clear()  # caught: the test's own planted problem


@pytest.mark.parametrize("change,where", [
    (lambda d: d["models"][0].update(status="fine"), "models/0/status"),
    (lambda d: d["models"][0]["checks"].append({"name": "vibes", "status": "passed", "message": ""}), "models/0/checks/3/name"),
    (lambda d: d["models"][0]["variant"].update(colour="red"), "models/0/variant"),
    (lambda d: d["models"][0].update(runtime_info={"backend": "cpu"}), "models/0/runtime_info"),
    (lambda d: d["models"][0]["checks"][2]["layers"][0].update(max_abs_diff="small"), "models/0/checks/2/layers/0/max_abs_diff"),
    (lambda d: d.update(schema=2), "schema"),
])
def test_validate_report_names_where_a_report_breaks_the_schema(change: Any, where: str) -> None:
    from pytest_onnx_parity.errors import OnnxParityError
    from pytest_onnx_parity.report.schema import validate_report

    doc = report(big_entry("m", n_layers=8, failing_from=4))
    validate_report(doc)
    change(doc)
    with pytest.raises(OnnxParityError, match=re.escape(f"at {where}:")):
        validate_report(doc)


def test_the_schema_takes_the_optional_fields_and_names_every_check_the_package_makes() -> None:
    import jsonschema

    from pytest_onnx_parity.report.schema import SCHEMA_FILE, validate_report

    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    made = set()
    for path in PACKAGE.rglob("*.py"):
        made |= set(re.findall(r'CheckResult\(\s*"([a-z_0-9]+)"', path.read_text()))
    named = set(schema["$defs"]["check"]["properties"]["name"]["enum"])
    assert "layers" in made and made <= named, made - named
    assert "preprocessing" in named
    entry = big_entry("m", n_layers=4, failing_from=None)
    entry["variant"].update(runtime="openvino(INFERENCE_PRECISION_HINT=f32)", preprocess="module:pkg.prep")
    entry["runtime_info"] = {"runtime": "openvino", "versions": {"openvino": "2025.1"}, "backend": "CPU",
                             "providers": [], "threads": 4, "precision": "bf16",
                             "precision_reason": "OpenVINO's default on a CPU with bf16", "device": "CPU"}
    entry["checks"].append({"name": "preprocessing", "status": "failed", "message": "mean differs",
                            "diagnosis": [{"field": "mean", "yours": "0.5", "model": "0.485", "explains": 0.9,
                                           "kind": "data_config"}]})
    validate_report(report(entry))


# -- compact entries, the full series beside them ------------------------------------------------------------


def test_deep_models_stay_within_the_per_model_budget_and_the_side_file_holds_every_row(tmp_path: Path) -> None:
    """Each entry is compacted on its own, so N entries take at most N x PER_MODEL_BUDGET: 50 models < 2 MB."""
    from pytest_onnx_parity.report.schema import load_report, write_json
    from pytest_onnx_parity.report.series import series_path

    one = big_entry("model_00")
    entries = [{**copy.deepcopy(one), "model": f"model_{i:02d}"} for i in range(5)]
    full = report(*copy.deepcopy(entries))
    before = len(json.dumps(report(one), indent=2))
    assert before > 10 * PER_MODEL_BUDGET  # what one entry took before
    path = tmp_path / "r.json"
    write_json(full, path)
    assert path.stat().st_size < len(entries) * PER_MODEL_BUDGET
    doc = load_report(path)
    for i, entry in enumerate(doc["models"]):
        assert len(json.dumps(entry, indent=2)) < PER_MODEL_BUDGET
        layers = next(c for c in entry["checks"] if c["name"] == "layers")
        assert layers["series"] == {"file": "r.layers.json", "entry": i, "layers": 600, "uncompared": 300,
                                    "message": len(one["checks"][2]["message"])}
        kept = [row["index"] for row in layers["layers"]]
        assert {298, 299, 300, 301, 302} <= set(kept) and len(kept) <= 11  # the divergence and its neighbours
        assert "more characters in r.layers.json" in layers["message"]
        headroom = next(c for c in entry["checks"] if c["name"] == "headroom")
        assert list(headroom["modules"]) == [row["name"] for row in one["checks"][2]["layers"][-3:]]  # the closest
    side = json.loads(series_path(path).read_text())
    assert [len(m["checks"]["layers"]["layers"]) for m in side["models"]] == [600] * len(entries)
    assert load_report(path, series=True) == full  # nothing lost


def test_a_report_with_nothing_to_move_has_no_side_file(tmp_path: Path) -> None:
    from pytest_onnx_parity.report.schema import write_json

    small = big_entry("tiny", n_layers=3, failing_from=None)
    write_json(report(small), tmp_path / "r.json")
    assert not (tmp_path / "r.layers.json").exists()
    assert json.loads((tmp_path / "r.json").read_text())["models"][0] == small


def test_merge_puts_the_full_series_into_the_merged_reports_own_side_file(tmp_path: Path) -> None:
    from pytest_onnx_parity.report.schema import load_report, merge_reports, write_json

    a, b = big_entry("a", n_layers=60, failing_from=30), big_entry("b", n_layers=40, failing_from=None)
    write_json(report(a), tmp_path / "shard1" / "r.json")
    write_json(report(b), tmp_path / "shard2" / "r.json")
    merged = merge_reports([tmp_path / "shard1" / "r.json", tmp_path / "shard2" / "r.json"])
    assert [len(e["checks"][2]["layers"]) for e in merged["models"]] == [60, 40]
    write_json(merged, tmp_path / "all" / "all.json")
    assert (tmp_path / "all" / "all.layers.json").is_file()
    again = load_report(tmp_path / "all" / "all.json", series=True)
    assert [e["checks"][2]["layers"] for e in again["models"]] == [a["checks"][2]["layers"], b["checks"][2]["layers"]]


def test_a_gate_report_stays_within_the_per_model_budget(pytester: pytest.Pytester, export_cache: str,
                                                          reports_written: Any) -> None:
    """Measured: with --onnx-parity-layers=always an entry of these tiny models took 67 to 130 KB before the side
    file (three quarters of it the per-module lists), about 10 KB after."""
    from pytest_onnx_parity.report.schema import load_report

    result = pytester.runpytest("-p", "no:cacheprovider", "--onnx-parity", "--onnx-parity-models=test_vit,test_convnext",
                                f"--onnx-parity-cache-dir={export_cache}", "--onnx-parity-exporter=torchscript",
                                "--onnx-parity-layers=always", "--onnx-parity-report=r.json")
    result.assert_outcomes(passed=2)
    path = pytester.path / "r.json"
    assert path.stat().st_size < 2 * PER_MODEL_BUDGET
    assert {Path(p).name for p in reports_written.checked} >= {"r.json", "r.layers.json"}  # both validated
    compact, full = load_report(path), load_report(path, series=True)
    for small, entry in zip(compact["models"], full["models"], strict=True):
        layers = next(c for c in entry["checks"] if c["name"] == "layers")
        ref = next(c for c in small["checks"] if c["name"] == "layers")["series"]
        assert ref["layers"] == len(layers["layers"]) == layers["coverage"]["compared"] > 20


# -- pages, paths, plots -------------------------------------------------------------------------------------------


def test_the_html_page_shows_each_models_data_config_and_its_source() -> None:
    from pytest_onnx_parity.report.render import render_html

    known = big_entry("vit_x", n_layers=2, failing_from=None)
    known["data_config"].update(input_size=[3, 256, 256], mean=[0.485, 0.456, 0.406])
    unknown = {**big_entry("crashed", n_layers=2, failing_from=None), "data_config": None, "data_config_source": None}
    page = render_html(report(known, unknown))
    row = next(r for r in page.split("<tr") if "vit_x" in r)
    assert "3x256x256, bicubic, crop 0.9 center, mean (0.485, 0.456, 0.406), std (0.5, 0.5, 0.5)" in row
    assert "from timm" in row and "pretrained config of the name" in row
    crashed = next(r for r in page.split("<tr") if "crashed" in r)
    assert "<td>-</td>" in crashed and "from " not in crashed
    assert "<th>data config</th>" in page


def test_the_written_paths_are_named_absolute_and_only_when_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_onnx_parity.report.schema import write_json
    from pytest_onnx_parity.report.written import written_paths_lines

    monkeypatch.chdir(tmp_path)
    (tmp_path / "plots").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "plots" / name).write_bytes(b"\x89PNG")
    settings = SimpleNamespace(report="out/r.json", plots="plots", artifacts="bundles", golden=None)
    assert written_paths_lines(settings) == [f"onnx-parity plots: {tmp_path / 'plots'} (2 PNG files)"]
    write_json(report(big_entry("m", n_layers=40, failing_from=20)), tmp_path / "out" / "r.json")
    (tmp_path / "bundles").mkdir()
    assert written_paths_lines(settings) == [
        f"onnx-parity report: {tmp_path / 'out' / 'r.json'}",
        f"onnx-parity per-layer series: {tmp_path / 'out' / 'r.layers.json'}",
        f"onnx-parity plots: {tmp_path / 'plots'} (2 PNG files)", f"onnx-parity reproducer bundles: {tmp_path / 'bundles'}"]
    write_json(report(big_entry("m", n_layers=2, failing_from=None)), tmp_path / "out" / "r.json")
    assert f"onnx-parity per-layer series: {tmp_path / 'out' / 'r.layers.json'}" not in written_paths_lines(settings)


def comparison(n: int = 30, failing: int | None = 20) -> Any:
    from pytest_onnx_parity.layers.results import LayerComparison, LayerResult

    keys = ("name", "module_type", "max_abs_diff", "max_rel_diff", "cosine", "rms", "tolerance", "passed",
            "upstream_rel", "own_diff", "own_tolerance", "own_excess", "onnx_value")
    rows = [layer_row(i, failing) for i in range(n)]
    layers = [LayerResult(onnx_ops=tuple(r["onnx_ops"]), shape=tuple(r["shape"]), **{k: r[k] for k in keys}) for r in rows]
    return LayerComparison(layers=layers, uncompared=[], atol=1e-5, rtol=1e-3, exporter="dynamo")


def test_the_plot_keeps_its_title_whole_its_legend_off_the_data_and_explains_the_rounding_floor() -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from pytest_onnx_parity.report.plots import FLOAT32_EPS, layer_figure

    title = "vit_base_patch16_224.augreg_in21k_ft_in1k\n" + ", ".join(f"axis{i} value{i}" for i in range(14))
    fig = layer_figure(comparison(), title)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        page = fig.bbox
        text = ax.get_title(loc="left")
        assert "axis13 value13" in text and "first divergence at" in text
        heading = next(c for c in ax.get_children() if getattr(c, "get_text", None) and c.get_text() == text)
        box = heading.get_window_extent(renderer)
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and box.y1 <= page.y1, (box, page)
        legend = ax.get_legend()
        assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
        labels = [t.get_text() for t in legend.get_texts()]
        assert any("float32 rounding floor" in t for t in labels) and any("exactly 0" in t for t in labels)
        floor = next(line for line in ax.get_lines() if "float32 rounding" in line.get_label())
        assert math.isclose(floor.get_ydata()[0], FLOAT32_EPS * 0.3, rel_tol=1e-9)  # 3.6e-8: where own errors sit
    finally:
        plt.close(fig)
