"""The JSON report: read, check, merge and write it (schema 1; its JSON Schema is ``docs/report.schema.json``).

A report (schema 1) is what ``--onnx-parity-report`` writes::

    {"schema": 1, "environment": {...}, "models": [{"model": ..., "status": ..., ...}]}

:func:`write_json` writes it compact, the full per-layer series in a side file beside it
(:mod:`.series`); :func:`load_report` reads and checks one (``series=True`` puts the full series
back); :func:`merge_reports` joins the reports of several runs (the shards of a CI matrix) into one
of the same schema; :func:`validate_report` checks a report against the JSON Schema (the test
suite does, for every report it writes; it needs ``jsonschema``, a test extra). The table and pages
are :mod:`.render`. Plain Python and the standard library only: this runs in a CI job that has
neither torch nor onnxruntime installed.
"""
from __future__ import annotations

import json
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..axes import AXES
from ..errors import OnnxParityError
from ..runtime.environment import environment

SCHEMA = 1
STATUSES = ("passed", "failed", "error", "skipped")  # skipped: a matrix variant that cannot run here (the reason in error)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal colours in exporter messages


class ReportError(OnnxParityError):
    """A report file that is missing, unreadable or not a schema-1 report."""


class ReportSchemaError(ReportError):
    """A report that does not follow ``docs/report.schema.json``."""


# -- reading and merging ------------------------------------------------------------------------------


def load_report(path: "str | os.PathLike[str]", *, series: bool = False) -> dict[str, Any]:
    """Read and check one schema-1 report; :class:`ReportError` says what is wrong. ``series``: with the full
    per-layer series from its side file (:func:`.series.attach`), where that file is found."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise ReportError(f"{p}: is a folder, not a JSON report") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{p}: cannot read it: {exc}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ReportError(f"{p}: not valid JSON ({exc}); give a report written by --onnx-parity-report") from None
    check_report(doc, str(p))
    if series:
        from .series import attach

        attach(doc, p)
    return doc


def check_report(doc: Any, where: str = "report") -> None:
    """Raise :class:`ReportError` unless ``doc`` looks like a schema-1 report."""
    if not isinstance(doc, dict):
        raise ReportError(f"{where}: expected a JSON object with schema, environment and models")
    if doc.get("schema") != SCHEMA:
        raise ReportError(f"{where}: unsupported report schema {doc.get('schema')!r} (this version reads schema {SCHEMA})")
    models = doc.get("models")
    if not isinstance(models, list):
        raise ReportError(f"{where}: 'models' must be a list")
    for i, entry in enumerate(models):
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
            raise ReportError(f"{where}: models[{i}] has no 'model' name")
        if entry.get("status") not in STATUSES:
            raise ReportError(f"{where}: models[{i}] ({entry['model']}) has status {entry.get('status')!r}, "
                              f"expected one of {', '.join(STATUSES)}")
    if not isinstance(doc.get("environment", {}), dict):
        raise ReportError(f"{where}: 'environment' must be an object")


#: The axes of an entry's ``variant`` (axes.AXES), in column order.
VARIANT_AXES = AXES  # the matrix axes (axes.py)


def entry_key(entry: Mapping[str, Any]) -> tuple[str, str]:
    """Entries with the same key describe the same check: the model spec and its variant (the matrix point;
    the exporter alone for entries written before the matrix)."""
    v = entry.get("variant") or {}
    if not v:
        return str(entry["model"]), str(entry.get("exporter") or "")
    return str(entry["model"]), "/".join(f"{a}={v.get(a)}" for a in VARIANT_AXES if a in v)


def variant_columns(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    """The variant axes whose values differ between ``entries`` (the columns worth showing)."""
    es = list(entries)
    return [a for a in VARIANT_AXES
            if len({json.dumps((e.get("variant") or {}).get(a), sort_keys=True) for e in es}) > 1]


def merge_reports(reports: Iterable["str | os.PathLike[str] | Mapping[str, Any]"]) -> dict[str, Any]:
    """Merge reports (paths or loaded dicts) into one schema-1 report.

    One entry per model (and exporter) is kept: when the same one appears again,
    the later report wins and ``notes`` says which was replaced. ``sources`` lists
    the inputs in order. When the environments (library versions) differ, each is
    kept under ``environments`` and a note names the differing libraries;
    ``environment`` is then the first report's.
    """
    merged: "OrderedDict[tuple[str, str], dict[str, Any]]" = OrderedDict()
    origin: dict[tuple[str, str], str] = {}
    sources: list[str] = []
    envs: list[dict[str, Any]] = []
    notes: list[str] = []
    for i, rep in enumerate(reports):
        if isinstance(rep, Mapping):
            doc, name = dict(rep), f"report #{i + 1}"
            check_report(doc, name)
        else:
            doc, name = load_report(rep, series=True), str(rep)
        sources.append(name)
        envs.append({"source": name, "environment": dict(doc.get("environment") or {})})
        for note in doc.get("notes") or []:
            notes.append(f"{name}: {note}")
        for entry in doc["models"]:
            key = entry_key(entry)
            if key in merged:
                old, new = merged[key].get("status"), entry.get("status")
                notes.append(f"{key[0]} ({key[1] or 'variant unknown'}) appears in {origin[key]} ({old}) and in "
                             f"{name} ({new}): kept the later one")
                del merged[key]  # re-insert so that the order follows the winner
            merged[key] = entry
            origin[key] = name
    if not sources:
        raise ReportError("nothing to merge: give at least one report")
    doc_out: dict[str, Any] = {
        "schema": SCHEMA,
        "environment": envs[0]["environment"],
        "models": sorted(merged.values(), key=lambda e: entry_key(e)),
        "sources": sources,
    }
    differing = _differing_keys([e["environment"] for e in envs])
    if differing:
        doc_out["environments"] = envs
        notes.append("environments differ in " + ", ".join(
            f"{k} ({' / '.join(sorted({str(e['environment'].get(k, 'missing')) for e in envs}))})" for k in differing))
    if notes:
        doc_out["notes"] = notes
    return doc_out


def _differing_keys(envs: list[dict[str, Any]]) -> list[str]:
    keys = sorted({k for e in envs for k in e})
    return [k for k in keys if len({json.dumps(e.get(k), sort_keys=True) for e in envs}) > 1]


def write_json(doc: Mapping[str, Any], path: "str | os.PathLike[str]") -> None:
    """Write a report atomically (a reader never sees half of it): compact, with the full per-layer series in
    its side file (:func:`.series.split`, ``<report>.layers.json``) when any entry has them."""
    from ..files import write_atomic  # looked up on each call: the test suite validates what passes through here
    from .series import series_path, split

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    main, side = split(doc, p)
    if side is not None:
        write_atomic(series_path(p), json.dumps(side, separators=(",", ":")) + "\n")
    write_atomic(p, json.dumps(main, indent=2) + "\n")


def write_report(path: "str | os.PathLike[str]", results: list[dict[str, Any]]) -> None:
    """The gate's and ``onnx-parity check``'s report of ``results`` (entries, :meth:`ParityResult.to_dict`)."""
    write_json({"schema": SCHEMA, "environment": environment(), "models": sorted(results, key=entry_key)}, path)


# -- the JSON Schema ------------------------------------------------------------------------------------

#: the report's JSON Schema, in the source tree (the package does not ship it)
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "report.schema.json"


def validate_report(doc: Any, *, side_file: bool = False, schema_file: "str | os.PathLike[str] | None" = None) -> None:
    """Check ``doc`` against ``docs/report.schema.json`` (``side_file``: a report's per-layer side file, its
    ``$defs/side_file``); :class:`ReportSchemaError` names each place that does not follow it. Needs
    ``jsonschema`` (``pip install "pytest-onnx-parity[test]"``), imported here only."""
    try:
        import jsonschema
    except ImportError as exc:
        raise ReportError('validating a report needs jsonschema: pip install "pytest-onnx-parity[test]"') from exc
    where = Path(schema_file) if schema_file is not None else SCHEMA_FILE
    try:
        schema = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot read the report's JSON Schema {where}: {exc}") from None
    if side_file:
        schema = {"$schema": schema.get("$schema"), "$defs": schema.get("$defs", {}), "$ref": "#/$defs/side_file"}
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  at {'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}" for e in errors[:10]]
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        what = "side file" if side_file else "report"
        raise ReportSchemaError(f"the {what} does not follow {where.name}:\n" + "\n".join(lines) + more)
