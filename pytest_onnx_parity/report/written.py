"""Where a run wrote its files: the lines the gate's terminal summary and ``onnx-parity check`` end with."""
from __future__ import annotations

from pathlib import Path
from typing import Any

#: (settings field, what it holds) in the order the lines are printed
WRITTEN = (("report", "report"), ("plots", "plots"), ("artifacts", "reproducer bundles"), ("golden", "golden references"))


def written_paths_lines(settings: Any) -> list[str]:
    """One line per place this run wrote to that exists now, its absolute path: the JSON report and its per-layer
    side file (:func:`.series.series_path`), the plots folder (with its PNG count), the reproducer bundles and the
    golden references. ``settings``: anything with those fields (``Settings``); a field unset or missing is left out."""
    from .series import series_path

    lines = []
    for field, what in WRITTEN:
        value = getattr(settings, field, None)
        if not value:
            continue
        path = Path(value).resolve()
        if field == "report":
            if path.is_file():
                lines.append(f"onnx-parity {what}: {path}")
                side = series_path(path)
                if side.is_file() and _refers_to(path, side.name):
                    lines.append(f"onnx-parity per-layer series: {side}")
            continue
        if not path.is_dir():
            continue
        if field == "plots":
            n = sum(1 for p in path.glob("*.png"))
            lines.append(f"onnx-parity {what}: {path} ({n} PNG file{'s' if n != 1 else ''})")
        else:
            lines.append(f"onnx-parity {what}: {path}")
    return lines


def _refers_to(report: Path, side_name: str) -> bool:
    """Whether ``report`` points at its side file (one left by an earlier run is not this run's)."""
    import json

    try:
        doc = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any(isinstance(c, dict) and (c.get("series") or {}).get("file") == side_name
               for e in doc.get("models", []) if isinstance(e, dict) for c in e.get("checks") or [])
