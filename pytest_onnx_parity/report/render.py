"""The report rendered: the summary table (terminal, Markdown), the HTML page, and the failure
reasons grouped.
"""
from __future__ import annotations

import html
import re
from collections import OrderedDict
from typing import Any, Mapping

from .schema import _ANSI, STATUSES, entry_key, variant_columns


def summary_lines(results: list[dict[str, Any]]) -> str:
    """The summary table the gate and ``onnx-parity check`` print: one row per entry, the varying axes
    as columns; cells formatted as in the compatibility table (:func:`cell`)."""
    from ..compare import format_table
    from ..specs import short_text

    axes = variant_columns(results)
    # paths cut to file names (the JSON report keeps them whole), unless that would make two models look alike
    short = {m: short_text(m) for m in {d["model"] for d in results}}
    clash = {s for s in short.values() if list(short.values()).count(s) > 1}
    rows = []
    for d in sorted(results, key=entry_key):
        v = d.get("variant") or {}
        model = d["model"] if short[d["model"]] in clash else short[d["model"]]
        rows.append([model, *(cell(v.get(a)) for a in axes),
                     *(cell(d, c) for c in ("status", "max abs diff", "top-1", "first divergence", "export s", "cache hit"))])
    return format_table(rows, ["model", *axes, "status", "max abs diff", "top-1", "first divergence", "export s", "cache hit"])


def cell(entry: Any, column: str | None = None) -> str:
    """One cell of either table: ``entry[column]`` formatted for its column (``column`` None: a plain value).

    The one place the tables agree on what a missing or non-finite figure looks like: ``-`` for
    unknown, ``inf``/``nan`` as such (a report keeps them as null or as the text the gate wrote).
    """
    if column is None:
        return "-" if entry is None else str(entry)
    if column in ("max abs diff", "top-1", "top-1 agreement"):
        v = entry.get("max_abs_diff" if column == "max abs diff" else "top1_agreement")
        if v is None or isinstance(v, str):
            return "-" if v is None else v
        if v != v or v in (float("inf"), float("-inf")):
            return str(float(v))
        return f"{float(v):.2e}" if column == "max abs diff" else f"{100 * float(v):.1f}%"
    if column == "export s":
        t = (entry.get("timings") or {}).get("export_s")
        return f"{t:.1f}" if t else "-"
    if column == "cache hit":
        return "yes" if entry.get("cache_hit") else "no"
    key = column.replace(" ", "_")
    return cell(entry.get(key) or None) if key != "status" else str(entry.get("status"))


TABLE_COLUMNS = ("model", "status", "exporter", "opset", "max abs diff", "top-1 agreement", "first divergence")


def counts(report: Mapping[str, Any]) -> dict[str, int]:
    out = {s: 0 for s in STATUSES}
    for e in report.get("models", []):
        out[e.get("status", "error")] = out.get(e.get("status", "error"), 0) + 1
    out["total"] = sum(out[s] for s in STATUSES)
    return out


def reason(entry: Mapping[str, Any]) -> str:
    """Why an entry did not pass, in full: the error, or the failing checks and their first lines."""
    if entry.get("status") in ("error", "skipped"):
        return _ANSI.sub("", str(entry.get("error") or f"{entry.get('status')} without a message"))
    bad = [c for c in entry.get("checks") or [] if c.get("status") in ("failed", "error")]
    if not bad:
        return "failed (no failing check recorded)"
    errored = [c for c in bad if c.get("status") == "error"]
    if errored:  # a check that could not decide (ONNX Runtime cannot run the file, inconclusive) says more
        c = errored[0]
        first = (_ANSI.sub("", str(c.get("message") or "")).strip().splitlines() or [""])[0]
        return f"{c.get('name')} check gave no verdict: {first}".strip()
    names = ", ".join(str(c.get("name")) for c in bad)
    return f"failed checks: {names}"


#: how much of each check's message, and of a whole reason, :func:`full_reason` keeps
CHECK_MESSAGE_LIMIT = 1500


FULL_REASON_LIMIT = 6000


def full_reason(entry: Mapping[str, Any]) -> str:
    """Why an entry did not pass, with the messages that name the fix: the error, or each failing
    check's own message (weights first, as the checks run), each cut at :data:`CHECK_MESSAGE_LIMIT`."""
    if entry.get("status") in ("error", "skipped"):
        return _cut(reason(entry), FULL_REASON_LIMIT)
    bad = [c for c in entry.get("checks") or [] if c.get("status") in ("failed", "error")]
    if not bad:
        return reason(entry)
    parts = [reason(entry)]
    for c in bad:
        message = _ANSI.sub("", str(c.get("message") or "")).strip() or "(no message)"
        parts.append(f"--- {c.get('name')} ({c.get('status')}) ---\n{_cut(message, CHECK_MESSAGE_LIMIT)}")
    return _cut("\n\n".join(parts), FULL_REASON_LIMIT)


def _cut(text: str, n: int) -> str:
    """``text`` up to ``n`` characters, cut at a line end where one is near, saying how much was left out."""
    if len(text) <= n:
        return text
    head = text[:n]
    if head.rfind("\n") > n // 2:
        head = head[:head.rfind("\n")]
    return f"{head.rstrip()}\n[... {len(text) - len(head)} more characters in the JSON report]"


_CHAIN = " <- "


_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"0x[0-9a-fA-F]+", "0x…"),
    (r"(?<![\w.])(?:[A-Za-z]:)?(?:[/\\][\w.+@-]+){2,}(?::\d+)?", "<path>"),  # file paths, with line numbers
    (r"\b[suf]\d+\b", "<sym>"),  # symbolic sizes of torch.export (s0, u12)
    (r"(?<![A-Za-z_])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![A-Za-z])", "N"),  # numbers, not 4D or 2x
    (r"(?:N\s*,\s*)+N", "N,…"),  # shapes and index lists
    (r"'[^']{40,}'", "'…'"),
    (r"\s+", " "),
)


def reason_key(text: str, model: str | None = None, limit: int = 180) -> str:
    """A short normal form of a reason, so the same cause groups across models.

    The exporter's chain (``A <- B <- C``) is cut to its outermost and innermost
    parts; model names, paths, addresses, numbers and symbolic sizes are replaced
    by placeholders.
    """
    t = _ANSI.sub("", str(text))
    if model:
        for name in {model, model.split("=")[0], model.split("=")[0].split(".")[0]}:
            if name:
                t = t.replace(name, "<model>")
    parts = [p.strip() for p in t.split(_CHAIN) if p.strip()]
    if len(parts) > 1:  # the outer message, shortened, and the root cause, whole
        first = _head(parts[0])
        t = f"{first if len(first) <= 90 else first[:89].rstrip()} … {_head(parts[-1])}"
    else:
        t = _head(t)
    for pat, rep in _PATTERNS:
        t = re.sub(pat, rep, t)
    t = t.strip()
    return t if len(t) <= limit else t[: limit - 1].rstrip() + "…"


def _head(text: str) -> str:
    """The first sentence-ish part: up to the first line break or '. ' after some words."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    m = re.search(r"(?<=[a-z)\]'`])\. (?=[A-Z])", line[20:])
    return line[: 20 + m.start() + 1] if m else line


def group_reasons(report: Mapping[str, Any], statuses: tuple[str, ...] = ("error", "failed")) -> list[dict[str, Any]]:
    """Non-passing entries grouped by :func:`reason_key`, biggest group first.

    Each group: ``status``, ``reason`` (the key), ``models`` and ``example`` (one full reason,
    :func:`full_reason`: the messages that name the fix).
    """
    groups: "OrderedDict[tuple[str, str], dict[str, Any]]" = OrderedDict()
    for e in sorted(report.get("models", []), key=entry_key):
        status = e.get("status")
        if status not in statuses:
            continue
        key = (status, reason_key(reason(e), e.get("model")))
        g = groups.setdefault(key, {"status": status, "reason": key[1], "models": [], "example": full_reason(e)})
        g["models"].append(e["model"])
    return sorted(groups.values(), key=lambda g: (statuses.index(g["status"]), -len(g["models"]), g["reason"]))


def table_columns(report: Mapping[str, Any]) -> list[str]:
    """TABLE_COLUMNS plus the variant axes that vary in this report (exporter and opset are always there)."""
    extra = [a for a in variant_columns(report.get("models", [])) if a not in ("exporter", "opset")]
    return [*TABLE_COLUMNS[:4], *extra, *TABLE_COLUMNS[4:]]


def table_rows(report: Mapping[str, Any]) -> list[list[str]]:
    extra = table_columns(report)[4:-3]
    rows = []
    for e in sorted(report.get("models", []), key=entry_key):
        v = e.get("variant") or {}
        rows.append([str(e["model"]), *(cell(e, c) for c in ("status", "exporter", "opset")),
                     *(cell(v.get(a)) for a in extra),
                     *(cell(e, c) for c in ("max abs diff", "top-1 agreement", "first divergence"))])
    return rows


def _env_line(report: Mapping[str, Any]) -> str:
    env = report.get("environment") or {}
    return ", ".join(f"{k} {v}" for k, v in env.items()) or "unknown"


def _summary_line(report: Mapping[str, Any]) -> str:
    c = counts(report)
    line = f"{c['total']} models: {c['passed']} passed, {c['failed']} failed, {c['error']} errors"
    return line + (f", {c['skipped']} skipped" if c.get("skipped") else "")


def _md_cell(text: str) -> str:
    t = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    return t.replace("<", "&lt;").replace(">", "&gt;")


def render_markdown(report: Mapping[str, Any], *, title: str = "ONNX parity: compatibility table",
                    heading_level: int = 1) -> str:
    """The table and the grouped reasons as GitHub-flavoured Markdown."""
    h = "#" * max(1, heading_level)
    out = [f"{h} {title}", "", _summary_line(report) + ".", "", f"Environment: {_md_cell(_env_line(report))}.", ""]
    for note in report.get("notes") or []:
        out.append(f"> Note: {_md_cell(note)}")
    if report.get("notes"):
        out.append("")
    cols = table_columns(report)
    out.append("| " + " | ".join(cols) + " |")
    out.append("| " + " | ".join("---:" if c in ("opset", "max abs diff", "top-1 agreement") else "---" for c in cols) + " |")
    for row in table_rows(report):
        row = [f"`{_md_cell(row[0])}`", *(_md_cell(c) for c in row[1:])]
        out.append("| " + " | ".join(row) + " |")
    groups = group_reasons(report, ("error", "failed", "skipped"))
    if groups:
        out += ["", f"{h}# Errors, failures and skips by reason", ""]
        for g in groups:
            out.append(f"- **{g['status']}** ({len(g['models'])}): {_md_cell(g['reason'])}")
            out.append(f"  - models: {', '.join(f'`{_md_cell(m)}`' for m in g['models'])}")
            if g["example"].strip() != g["reason"].strip():
                out.append(f"  - example ({_md_cell(g['models'][0])}): {_md_cell(_clip(g['example'], 600))}")
    return "\n".join(out) + "\n"


def _clip(text: str, n: int) -> str:
    t = " ".join(str(text).split())
    return t if len(t) <= n else t[: n - 1] + "…"


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#1f2328}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em}
table{border-collapse:collapse;width:100%}th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa;cursor:pointer;position:sticky;top:0}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.passed td.status{color:#1a7f37}tr.failed td.status{color:#cf222e;font-weight:600}
tr.error td.status{color:#9a6700;font-weight:600}code{font-size:90%}
.summary{font-size:1.1em}.env,.note{color:#57606a}details{margin:.3em 0 1em}pre{white-space:pre-wrap;background:#f6f8fa;padding:.6em}
"""


_JS = """
document.querySelectorAll('th').forEach(function(th,i){th.addEventListener('click',function(){
var tb=th.closest('table').tBodies[0],rows=Array.from(tb.rows),asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
rows.sort(function(a,b){var x=a.cells[i].dataset.v||a.cells[i].textContent,y=b.cells[i].dataset.v||b.cells[i].textContent;
var nx=parseFloat(x),ny=parseFloat(y);var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);return asc?c:-c;});
rows.forEach(function(r){tb.appendChild(r);});});});
"""


def render_html(report: Mapping[str, Any], *, title: str = "ONNX parity: compatibility table") -> str:
    """A self-contained HTML page (inline style and script, no external assets); all text is escaped."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title>", f"<style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>", f'<p class="summary">{e(_summary_line(report))}</p>',
        f'<p class="env">Environment: {e(_env_line(report))}</p>',
    ]
    for note in report.get("notes") or []:
        parts.append(f'<p class="note">Note: {e(str(note))}</p>')
    cols = table_columns(report)
    n_extra = len(cols) - len(TABLE_COLUMNS)
    parts.append('<table id="models"><thead><tr>' + "".join(f"<th>{e(c)}</th>" for c in [*cols, "data config"])
                 + "</tr></thead><tbody>")
    entries = sorted(report.get("models", []), key=entry_key)
    for entry, row in zip(entries, table_rows(report)):
        status = row[1] if row[1] in STATUSES else "error"
        extra, row = row[4:4 + n_extra], row[:4] + row[4 + n_extra:]
        tip = e(_clip(reason(entry), 400), quote=True) if status != "passed" else ""
        cells = [f"<td><code>{e(row[0])}</code></td>", f'<td class="status" title="{tip}">{e(row[1])}</td>',
                 f"<td>{e(row[2])}</td>", f'<td class="num">{e(row[3])}</td>', *(f"<td>{e(x)}</td>" for x in extra),
                 f'<td class="num" data-v="{e(_sort_value(entry.get("max_abs_diff")))}">{e(row[4])}</td>',
                 f'<td class="num" data-v="{e(_sort_value(entry.get("top1_agreement")))}">{e(row[5])}</td>',
                 f"<td><code>{e(row[6])}</code></td>", _data_config_cell(entry)]
        parts.append(f'<tr class="{status}">' + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    groups = group_reasons(report, ("error", "failed", "skipped"))
    if groups:
        parts.append("<h2>Errors, failures and skips by reason</h2>")
        for g in groups:
            parts.append(f"<h3>{e(g['status'])} ({len(g['models'])}): {e(g['reason'])}</h3>")
            parts.append("<p>" + ", ".join(f"<code>{e(m)}</code>" for m in g["models"]) + "</p>")
            parts.append(f"<details><summary>full reason ({e(g['models'][0])})</summary><pre>{e(g['example'])}</pre></details>")
    parts.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(parts) + "\n"


def data_config_text(config: Any) -> str:
    """A data config in one line: ``3x224x224, bicubic, crop 0.875 center, mean (0.485, 0.456, 0.406), std (...)``;
    ``-`` when unknown."""
    if not isinstance(config, Mapping) or not config:
        return "-"
    parts = []
    size = config.get("input_size")
    if isinstance(size, (list, tuple)):
        parts.append("x".join(str(n) for n in size))
    if config.get("interpolation"):
        parts.append(str(config["interpolation"]))
    crop = config.get("crop_pct")
    if crop is not None:
        parts.append(f"crop {crop:g}" if isinstance(crop, (int, float)) else f"crop {crop}")
        parts[-1] += f" {config['crop_mode']}" if config.get("crop_mode") else ""
    for key in ("mean", "std"):
        if isinstance(config.get(key), (list, tuple)):
            parts.append(f"{key} (" + ", ".join(f"{float(v):.4g}" for v in config[key]) + ")")
    from ..preprocessing.dataconfig import DATA_CONFIG_FIELDS

    rest = [k for k in config if k not in DATA_CONFIG_FIELDS]
    parts += [f"{k} {config[k]}" for k in rest]
    return ", ".join(parts)


def _data_config_cell(entry: Mapping[str, Any]) -> str:
    """The HTML cell of an entry's data config and where it came from (``data_config_source``)."""
    e = html.escape
    source = entry.get("data_config_source")
    from ..preprocessing.dataconfig import source_words

    where = f'<br><span class="note">from {e(source_words(source))}</span>' if source else ""
    return f"<td>{e(data_config_text(entry.get('data_config')))}{where}</td>"


def _sort_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return "1e308" if v in ("inf", "nan") else v
    return repr(float(v))
