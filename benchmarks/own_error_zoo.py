"""Clean own error per layer over the zoo sweep: the float32 evidence for the per-layer tolerance.

Reads the merged gate reports of a zoo sweep run with ``--layers always``
(``python benchmarks/zoo_sweep.py --out DIR --exporters both --layers always``: ``DIR/EXPORTER/all.json``)
and, for every model whose per-layer check compared anything, takes the largest own error of its
modules (``own_rel``: ``own_diff / rms``, each module's ONNX nodes run on torch's values at its inputs).
Random non-degenerate weights, so every file is clean unless the gate says otherwise: the figures are
how much of the float32 tolerance (``atol + rtol * rms``, rtol ``LAYER_RTOL``) clean files use. Writes
the ``own-error-zoo`` block of docs/tolerances.md.

    python benchmarks/own_error_zoo.py DIR
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from docblock import write_block

DOC = Path(__file__).resolve().parents[1] / "docs" / "tolerances.md"
MARKER = "own-error-zoo"
SHOWN = 8


def worst_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per model with a per-layer check that compared layers: its worst own error, the module, the verdict."""
    rows = []
    for entry in report.get("models", []):
        layers = next((c for c in entry.get("checks", []) if c.get("name") == "layers"), None)
        if not layers or not layers.get("layers"):
            continue
        owned = [(r["own_rel"], r["name"], r["own_tolerance"], r["rms"]) for r in layers["layers"]
                 if isinstance(r.get("own_rel"), (int, float))]
        if not owned:
            continue
        rel, name, tol, rms = max(owned)
        rows.append({"model": entry["model"], "own_rel": rel, "module": name,
                     "share": rel * rms / tol if isinstance(tol, (int, float)) and tol > 0 else float("nan"),
                     "status": layers.get("status"), "compared": len(layers["layers"]),
                     "unmeasured": sum(1 for r in layers["layers"] if r.get("own_diff") is None)})
    return rows


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))] if xs else float("nan")


def render(runs: dict[str, list[dict[str, Any]]], rtol: float, atol: float, code: str) -> str:
    lines = ["## Own error per layer over the zoo (float32, clean files)", "",
             f"Written by `benchmarks/own_error_zoo.py` from the merged reports of the zoo sweep ({code}, "
             "`--onnx-parity-layers=always`; docs/compatibility.md says how the models were picked and run). For each "
             "model whose per-layer check compared layers: the largest own error of its modules (`own_diff / rms`), and "
             f"the share of its tolerance (atol {atol:g} + rtol {rtol:g} x RMS) that module uses.", "",
             "| exporter | models | median | 90th percentile | largest (model, module) | largest share of the tolerance | "
             "layers check failed | rows without an own error |",
             "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for exporter, rows in runs.items():
        if not rows:
            continue
        rels = [r["own_rel"] for r in rows]
        top = max(rows, key=lambda r: r["own_rel"])
        share = max(r["share"] for r in rows)
        failed = sum(r["status"] == "failed" for r in rows)
        lines.append(f"| {exporter} | {len(rows)} | {quantile(rels, 0.5):.1e} | {quantile(rels, 0.9):.1e} | "
                     f"{top['own_rel']:.1e} (`{top['model']}`, `{top['module']}`) | {share:.2g} | {failed} | "
                     f"{sum(r['unmeasured'] for r in rows)} of {sum(r['compared'] for r in rows)} |")
    lines += ["", f"The {SHOWN} models closest to the tolerance, either exporter:", "",
              "| exporter | model | module | own error (x RMS) | share of the tolerance | layers check |",
              "| --- | --- | --- | ---: | ---: | --- |"]
    every = [(r["share"], exporter, r) for exporter, rows in runs.items() for r in rows]
    for share, exporter, r in sorted(every, key=lambda t: -t[0])[:SHOWN]:
        lines.append(f"| {exporter} | `{r['model']}` | `{r['module']}` | {r['own_rel']:.1e} | {share:.2g} | {r['status']} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    out = Path(argv[0])
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pytest_onnx_parity.tolerances import LAYER_ATOL, LAYER_RTOL

    runs, code = {}, "commit unknown"
    for exporter in ("dynamo", "torchscript"):
        path = out / exporter / "all.json"
        if path.is_file():
            runs[exporter] = worst_rows(json.loads(path.read_text()))
    codes = sorted(p.name.split("-", 1)[1] for p in out.glob("code-*"))
    if codes:
        code = f"pytest-onnx-parity at commit `{codes[-1][:12]}`"
    if not runs:
        print(f"no merged reports under {out}")
        return 1
    text = render(runs, LAYER_RTOL, LAYER_ATOL, code)
    write_block(DOC, MARKER, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
