"""The ``zoo-sweep`` block of docs/compatibility.md, rendered from the merged reports of both exporters.

Used by benchmarks/zoo_sweep.py (which passes the selection, the merged report and the timings
of each exporter); the block is written with benchmarks/docblock.write_block. No third-party imports.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from docblock import write_block
from zoo_causes import CLASSES, classify, classify_report

TITLE = "# Compatibility of the timm zoo with ONNX export and ONNX Runtime"
STATUSES = ("passed", "failed", "error", "skipped")
INTROS = {
    "exporter limitation": "Grouped by the exporter's reason; the last column says how the other exporter fared on "
                           "the same models (its cause class when it did not pass).",
    "ill-conditioned weights": "The evidence is the package's own float64 arbitration, as recorded in each check's "
                               "report (`float64`: where, ONNX Runtime's departure from torch float32, torch float32's "
                               "error against float64 and the package's verdict `blames_export`; "
                               "`torch_self_sensitivity`: how far torch moves for a 1e-6 input change).",
    "defect of ours": "Each line is a check that failed or stopped, with the float64 evidence when the check recorded "
                      "one (`blames export: yes` means ONNX Runtime is farther from float64 than float32 torch is, "
                      "beyond the package's arbitration factor).",
}


def machine() -> dict[str, Any]:
    """Cores, CPU name, Python of this machine."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": name, "python": platform.python_version(), "system": platform.system()}


def spent(timings: dict[str, Any]) -> float:
    """Seconds of gate wall time: shards plus single reruns."""
    return (sum(s["wall_s"] for s in timings.get("shards", {}).values())
            + sum(r["wall_s"] for r in timings.get("reruns", {}).values()))


def _loads(timings: dict[str, Any]) -> str:
    one = [float(s["load"].split()[0]) for s in timings.get("shards", {}).values()
           if s.get("load") and s["load"] != "?"]
    return f"{min(one):.2f}–{max(one):.2f}" if one else "?"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def _count(merged: dict[str, Any]) -> dict[str, int]:
    c = {s: 0 for s in STATUSES}
    for e in merged.get("models", []):
        c[e.get("status", "error")] = c.get(e.get("status", "error"), 0) + 1
    c["total"] = len(merged.get("models", []))
    return c


def _check_names(runs: dict[str, dict[str, Any]]) -> list[str]:
    """The check names the reports hold, in the order of their first appearance."""
    names: dict[str, None] = {}
    for r in runs.values():
        for e in r["merged"]["models"]:
            for c in e.get("checks") or []:
                names.setdefault(str(c.get("name")), None)
    return list(names)


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if s else 0.0


def render(sel: dict[str, Any], runs: dict[str, dict[str, Any]], opts: dict[str, Any], code: dict[str, str]) -> str:
    """The block's Markdown. ``runs``: exporter -> {"merged": report, "timings": {...}}; ``opts``: workers, shards, layers."""
    exps = list(runs)
    mach = machine()
    chosen = [c["model"] for c in sel["chosen"]]
    env = next((r["merged"].get("environment") for r in runs.values() if r["merged"].get("environment")), {}) or {}
    classes = {x: classify_report(r["merged"]) for x, r in runs.items()}
    entries = {x: {e["model"]: e for e in r["merged"]["models"]} for x, r in runs.items()}
    w, n = opts["workers"], opts["shards"]
    lines = [
        "Written by `benchmarks/zoo_sweep.py` from the merged gate reports of a real run; nothing here is estimated. "
        "Re-create it with `python benchmarks/zoo_sweep.py --out DIR --exporters dynamo,torchscript` "
        "(see the script's docstring).", "",
        "## How the models were picked", "", sel["rule"].replace("\n    ", "\n"), "",
        f"From {sel['candidates']} timm architectures (timm {sel['timm']}) in {sel['families']} families: "
        f"{len(sel['chosen'])} chosen, {len(sel['left_out'])} left out (listed at the end).", "",
        "## How they were checked", "",
        f"- For each exporter: `pytest -n {w} --onnx-parity --onnx-parity-exporter=EXPORTER --onnx-parity-layers="
        f"{opts['layers']}` with the models in an ini file, split into {n} shards (`--onnx-parity-shard=K/{n}`) run one "
        "after the other, reports merged with `python -m pytest_onnx_parity merge`; each exporter has its own export "
        "cache. The exporters ran one after the other on the same machine.",
        "- Random weights (`=random`, seed 0, made non-degenerate), data config from each model's pretrained config; "
        f"checks recorded: {', '.join(f'`{c}`' for c in _check_names(runs)) or 'none yet'}. A failed comparison is "
        "arbitrated by the package against torch in float64 (its `inconclusive` verdict, status error).",
        f"- `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}` (one torch thread per xdist worker); "
        f"per-layer comparison `--onnx-parity-layers={opts['layers']}`.",
        f"- Machine: {mach['cores']} CPU cores ({mach['cpu']}), {mach['system']}, Python {mach['python']}; shared with "
        "other work while the sweep ran (1-minute load average at the end of each shard: "
        + ", ".join(f"{x} {_loads(runs[x]['timings'])}" for x in exps) + ").",
        f"- Environment: {', '.join(f'{k} {v}' for k, v in env.items()) or '?'}.",
        f"- Code: pytest-onnx-parity at commit `{code.get('sha', '?')[:12]}` ({code.get('subject', '?')}).", "",
        "## Figures", "",
    ]
    for x in exps:
        got = len(runs[x]["merged"]["models"])
        if got < len(chosen):
            lines += [f"> **Partial run ({x})**: {got} of the {len(chosen)} chosen models have results; "
                      "the figures below cover only those.", ""]
    lines += ["| exporter | models checked | passed | failed | errors | skipped | gate wall time | throughput |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for x in exps:
        c, wall = _count(runs[x]["merged"]), spent(runs[x]["timings"])
        thr = f"{c['total'] / (wall / 60):.2f} models/min" if wall else "-"
        lines.append(f"| {x} | {c['total']} | {c['passed']} | {c['failed']} | {c['error']} | {c['skipped']} | "
                     f"{wall / 60:.1f} min | {thr} |")
    lines += ["", f"Wall time is the sum over the gate runs of that exporter (each shard with `-n {w}`, plus single "
              "reruns), start-up and exports included; throughput is models checked per minute of it. "
              "(`errors` counts the inconclusive verdicts too: the gate gives them status error.)", "",
              "## Why models did not pass", "",
              "Each model that did not pass has exactly one cause class (rules in `benchmarks/zoo_causes.py`): "
              "**exporter limitation** (torch.onnx raised; its reason is quoted), **runtime limitation** (ONNX Runtime "
              "cannot load or run the file), **model limitation (timm)**, **ill-conditioned weights** (the package's "
              "float64 arbitration: ONNX Runtime is no farther from torch than float32 torch is from float64 torch, or "
              "torch's own output is NaN/Inf), **skipped**, and **defect of ours** (anything else: a failed check, a "
              "check that stopped with an error of ours, a timeout or crash of the gate). The target is zero in the "
              "last class: each entry there is a false alarm or a silent export fault to investigate.", "",
              "| cause class | " + " | ".join(exps) + " |", "| --- |" + " ---: |" * len(exps)]
    for cls in CLASSES:
        lines.append(f"| {cls} | " + " | ".join(str(len(classes[x][cls])) for x in exps) + " |")
    lines.append("| **not passed, total** | " + " | ".join(str(sum(len(v) for v in classes[x].values())) for x in exps)
                 + " |")
    lines.append("")
    for cls in CLASSES:
        rows = [(x, m, ev) for x in exps for m, ev in classes[x][cls]]
        if not rows:
            continue
        lines += [f"### {cls[0].upper() + cls[1:]} ({', '.join(f'{x}: {len(classes[x][cls])}' for x in exps)})", ""]
        if cls in INTROS:
            lines += [INTROS[cls], ""]
        if cls == "exporter limitation":
            lines += _exporter_rows(rows, exps, entries)
        else:
            lines += ["| exporter | model | evidence |", "| --- | --- | --- |"]
            lines += [f"| {x} | `{m}` | {_cell(ev)} |" for x, m, ev in rows]
        lines.append("")
    lines += ["## Slowest exports", "", "| exporter | model | export s | total s | status |",
              "| --- | --- | ---: | ---: | --- |"]
    notes = []
    for x in exps:
        ex = sorted((e for e in runs[x]["merged"]["models"] if (e.get("timings") or {}).get("export_s")),
                    key=lambda e: -e["timings"]["export_s"])
        lines += [f"| {x} | `{e['model']}` | {e['timings']['export_s']:.1f} | {e['timings'].get('total_s', 0):.1f} | "
                  f"{e['status']} |" for e in ex[:8]]
        if ex:
            notes.append(f"{x}: median export {_median([e['timings']['export_s'] for e in ex]):.1f} s, all exports "
                         f"{sum(e['timings']['export_s'] for e in ex) / 60:.1f} min of worker time")
    lines += ["", "; ".join(notes) + ".", "", "## The table", "",
              "One row per chosen model checked; per exporter its status and, when it was compared, the max abs logit "
              "difference on the random batch, or its cause class.", "",
              "| family | model | parameters | " + " | ".join(exps) + " |", "| --- | --- | ---: |" + " --- |" * len(exps)]
    for r in sel["chosen"]:  # a partial run (--limit, --only, --max-minutes) lists only the models it checked
        if not any(r["model"] in entries[x] for x in exps):
            continue
        cells = []
        for x in exps:
            e = entries[x].get(r["model"])
            cells.append("-" if e is None else _status_cell(e))
        lines.append(f"| {r['family']} | `{r['model']}` | {r['params'] / 1e6:.2f}M | " + " | ".join(cells) + " |")
    lines.append("")
    if sel["left_out"]:
        lines += ["## Families left out", "", "| family | smallest | why |", "| --- | --- | --- |"]
        lines += [f"| {r['family']} | `{r['model']}` | {r['why']} |" for r in sel["left_out"]]
        lines.append("")
    return "\n".join(lines)


def _status_cell(e: dict[str, Any]) -> str:
    mad = e.get("max_abs_diff")
    diff = f" ({mad:.1e})" if isinstance(mad, (int, float)) else ""
    if e.get("status") == "passed":
        return "passed" + diff
    return f"{e.get('status')}: {classify(e)[0]}" + diff


def _exporter_rows(rows: list[tuple[str, str, str]], exps: list[str], entries: dict[str, dict[str, Any]]) -> list[str]:
    """Exporter limitations grouped by the exporter's reason; with how the other exporter fared on those models."""
    from pytest_onnx_parity.report.render import reason_key

    groups: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for x, m, ev in rows:
        groups.setdefault((x, reason_key(ev, m)), []).append((m, ev))
    out = ["| exporter | models | the exporter's reason (outer message … root cause) | models | with the other exporter |",
           "| --- | ---: | --- | --- | --- |"]
    for (x, _key), ms in sorted(groups.items(), key=lambda kv: (kv[0][0], -len(kv[1]), kv[0][1])):
        others = []
        for y in exps:
            if y == x:
                continue
            st: dict[str, int] = {}
            for m, _ in ms:
                e = entries[y].get(m)
                k = "not run" if e is None else ("passed" if e["status"] == "passed" else classify(e)[0])
                st[k] = st.get(k, 0) + 1
            others.append(f"{y}: " + ", ".join(f"{v} {k}" for k, v in sorted(st.items())))
        names = ", ".join(f"`{m}`" for m, _ in ms[:10]) + (" …" if len(ms) > 10 else "")
        out.append(f"| {x} | {len(ms)} | {_cell(ms[0][1])} | {names} | {'; '.join(others) or '-'} |")
    return out


def write_doc(doc: Path, sel: dict[str, Any], runs: dict[str, dict[str, Any]], opts: dict[str, Any],
              code: dict[str, str]) -> None:
    """Render and write the ``zoo-sweep`` block of ``doc``."""
    write_block(doc, "zoo-sweep", render(sel, runs, opts, code), title=TITLE)
