"""Per-layer series beside the report: the main report stays compact, the full series go to a side file.

Measured on a gate with ``--onnx-parity-layers=always`` (three tiny timm models, 2026-12): an entry
took 67 to 130 KB, 85 to 95% of it two per-module lists, the ``layers`` check's ``layers`` and
``uncompared`` rows and the ``headroom`` check's ``modules``; a real model has three to ten times
the modules. :func:`split` moves those lists, and any check message longer than
:data:`MESSAGE_LIMIT` (a failed ``layers`` check words its whole table), to ``<report>.layers.json``
(:func:`series_path`), and leaves in the entry what a reader needs first:

* ``layers``: the first divergence and :data:`NEIGHBOURS` layers either side of it, the
  :data:`CLOSEST` layers nearest their tolerance and the first :data:`CLOSEST` failing ones, each
  with its ``index`` in execution order;
* ``uncompared``: the first :data:`CLOSEST` rows; ``modules`` (headroom): the :data:`CLOSEST`
  closest to float16's largest value and the first :data:`CLOSEST` that overflow;
* ``series``: ``{"file": <side file name>, "entry": <index in it>, <list>: <full length>, ...}``.

The side file is ``{"schema": 1, "report": <report file name>, "models": [{"model", "variant",
"checks": {<check>: {<list>: [...], "message": ...}}}]}``, one item per entry that moved
anything, in the report's order. :func:`attach` puts the full series back (``onnx-parity merge``
does, so a merged report has its own side file). Standard library only.
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Mapping

#: which lists of which check move to the side file
SERIES_KEYS = {"layers": ("layers", "uncompared"), "headroom": ("modules",)}
#: layers either side of the first divergence kept in the report
NEIGHBOURS = 2
#: how many of the layers nearest their tolerance (and of the failing ones, uncompared rows, headroom modules) stay
CLOSEST = 3
#: a check message longer than this moves whole to the side file; the report keeps its head
MESSAGE_LIMIT = 4000


def series_path(report_path: "str | Path") -> Path:
    """The side file of ``report_path``: ``r.json`` -> ``r.layers.json`` (in the same folder)."""
    p = Path(report_path)
    return p.with_name(f"{p.stem}.layers.json")


def split(doc: Mapping[str, Any], report_path: "str | Path") -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The compact report and its side file (``None`` when nothing had to move); ``doc`` is left as it is."""
    side_name = series_path(report_path).name
    out = dict(doc)
    out["models"] = []
    side: list[dict[str, Any]] = []
    for entry in doc.get("models", []):
        entry = copy.copy(entry)
        moved: dict[str, Any] = {}
        checks = []
        for check in entry.get("checks") or []:
            small, full = _compact_check(check, side_name, len(side))
            checks.append(small)
            if full:
                moved[str(check.get("name"))] = full
        if "checks" in entry:
            entry["checks"] = checks
        if moved:
            side.append({"model": entry.get("model"), "variant": entry.get("variant"), "checks": moved})
        out["models"].append(entry)
    if not side:
        return out, None
    return out, {"schema": doc.get("schema", 1), "report": Path(report_path).name, "models": side}


def _compact_check(check: Mapping[str, Any], side_name: str, at: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The check as the report keeps it, and what moves (empty: nothing)."""
    small = dict(check)
    full: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for key in SERIES_KEYS.get(str(check.get("name")), ()):
        value = check.get(key)
        kept = _keep(key, value, check)
        if kept is not None and _size(kept) < _size(value):
            small[key], full[key], counts[key] = kept, value, len(value)
    message = check.get("message")
    if isinstance(message, str) and len(message) > MESSAGE_LIMIT:
        small["message"] = (message[:MESSAGE_LIMIT].rstrip()
                            + f"\n[... {len(message) - MESSAGE_LIMIT} more characters in {side_name}]")
        full["message"], counts["message"] = message, len(message)
    if full:
        small["series"] = {"file": side_name, "entry": at, **counts}
    elif isinstance(small.get("series"), dict):  # a compact entry whose side file was not found when merged
        small["series"] = {**small["series"], "file": None}
    return small, full


def _keep(key: str, value: Any, check: Mapping[str, Any]) -> Any:
    if key == "layers" and isinstance(value, list):
        return _keep_layers(value)
    if key == "uncompared" and isinstance(value, list):
        return value[:CLOSEST]
    if key == "modules" and isinstance(value, dict):
        return _keep_modules(value)
    return None


def _ratio(row: Mapping[str, Any]) -> float:
    """A layer row's figure against its tolerance (own error first); a non-finite figure (null) counts as inf."""
    own = row.get("own_diff") is not None
    diff = row.get("own_diff") if own else row.get("max_abs_diff")
    tol = row.get("own_tolerance") if own else row.get("tolerance")
    if not isinstance(diff, (int, float)):
        return math.inf
    return diff / tol if isinstance(tol, (int, float)) and tol > 0 else (math.inf if diff > 0 else 0.0)


def _keep_layers(rows: list[Any]) -> list[Any]:
    dicts = [r for r in rows if isinstance(r, dict)]
    if len(dicts) != len(rows):
        return rows
    failing = [i for i, r in enumerate(rows) if r.get("passed") is False]
    keep = set(failing[:CLOSEST])
    if failing:
        first = failing[0]
        keep.update(range(max(0, first - NEIGHBOURS), min(len(rows), first + NEIGHBOURS + 1)))
    keep.update(sorted(range(len(rows)), key=lambda i: -_ratio(rows[i]))[:CLOSEST])
    return [{"index": i, **rows[i]} for i in sorted(keep)]


def _keep_modules(modules: dict[str, Any]) -> dict[str, Any]:
    def closeness(item: tuple[str, Any]) -> float:
        v = item[1].get("closest_value") if isinstance(item[1], dict) else None
        return abs(v) if isinstance(v, (int, float)) else -1.0  # unknown: not close

    bad = [k for k, v in modules.items() if isinstance(v, dict) and (v.get("overflows") or v.get("nonfinite"))]
    keep = set(bad[:CLOSEST]) | {k for k, _ in sorted(modules.items(), key=closeness, reverse=True)[:CLOSEST]}
    return {k: v for k, v in modules.items() if k in keep}


def _size(value: Any) -> int:
    return len(json.dumps(value))


def attach(doc: dict[str, Any], report_path: "str | Path") -> dict[str, Any]:
    """``doc`` (read from ``report_path``) with its full series back from the side file, where that file is found;
    an entry whose side file is missing keeps its compact lists and its ``series`` reference."""
    sides: dict[str, Any] = {}
    folder = Path(report_path).parent
    for entry in doc.get("models", []):
        for check in entry.get("checks") or []:
            ref = check.get("series")
            if not isinstance(ref, dict) or not isinstance(ref.get("file"), str):
                continue
            name = ref["file"]
            if name not in sides:
                sides[name] = _read_side(folder / name)
            try:
                full = sides[name]["models"][ref["entry"]]["checks"][check["name"]]
            except (TypeError, KeyError, IndexError):
                continue
            check.update(full)
            del check["series"]
    return doc


def _read_side(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
