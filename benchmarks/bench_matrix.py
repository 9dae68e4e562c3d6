"""The deployment matrix's cost: each extra variant against a cold single item, and the whole matrix's wall time.

cold     = the gate on one model, one item, empty cache (``total_s`` of its report entry: build, export, checks).
matrix   = the gate on the same model over several axes, empty cache, in one pytest process; items run in
           collection order, so the first item of each export group pays the export and every later item is
           an *extra variant*: its ``total_s`` is the marginal cost of that variant (target: at most 0.35x cold).
wall     = the matrix's pytest process, start to end (imports included).

Each run is its own ``pytest --onnx-parity`` subprocess with an empty cache. Writes the table into the
``matrix-bench`` block of docs/performance.md (benchmarks/docblock.py's write_block).

    python benchmarks/bench_matrix.py [--models resnet18] [--exporter dynamo] [--json PATH]
    python benchmarks/bench_matrix.py --from-json PATH     # rewrite the block from saved measurements
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from docblock import write_block

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "performance.md"
MARKER = "matrix-bench"
TARGET = 0.35
#: the matrices measured: name -> extra gate arguments (each crossed with --onnx-parity-exporter)
MATRICES = {
    "precision x ort-opt x preprocessing": ["--onnx-parity-precision", "fp32,fp16", "--onnx-parity-ort-opt", "disabled,all",
                                            "--onnx-parity-embed-preprocessing"],
    "image sizes": ["--onnx-parity-image-size", "224,288"],
}


def gate(model: str, exporter: str, extra: list[str]) -> tuple[list[dict], float]:
    """Run the gate in a subprocess with an empty cache; its report entries (in run order) and its wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "r.json"
        cmd = [sys.executable, "-m", "pytest", "--onnx-parity", "-p", "no:cacheprovider", "-q", f"--rootdir={tmp}",
               f"--onnx-parity-models={model}", f"--onnx-parity-exporter={exporter}",
               f"--onnx-parity-cache-dir={tmp}/cache", f"--onnx-parity-report={report}", *extra]
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        if not report.is_file():
            raise SystemExit(f"gate run failed ({' '.join(cmd)}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        entries = json.loads(report.read_text())["models"]
    return entries, wall


def measure(model: str, exporter: str) -> dict:
    cold_entries, cold_wall = gate(model, exporter, [])
    cold = cold_entries[0]["timings"]["total_s"]
    out = {"model": model, "exporter": exporter, "cold_s": cold, "cold_wall_s": cold_wall, "matrices": []}
    for name, extra in MATRICES.items():
        entries, wall = gate(model, exporter, extra)
        ran = [e for e in entries if e["status"] != "skipped"]
        # the item that exported is the one with export time; every other item is an extra variant
        first = max(ran, key=lambda e: e["timings"].get("export_s") or 0.0)
        extras = [{"variant": {k: v for k, v in e["variant"].items()}, "status": e["status"],
                   "total_s": e["timings"]["total_s"], "ratio": e["timings"]["total_s"] / cold}
                  for e in ran if e is not first]
        out["matrices"].append({"name": name, "args": " ".join(extra), "items": len(entries), "ran": len(ran),
                                "statuses": sorted({e["status"] for e in entries}), "wall_s": wall,
                                "first_s": first["timings"]["total_s"], "extras": extras})
    return out


def render(results: list[dict], meta: dict) -> str:
    lines = [f"Measured by `benchmarks/bench_matrix.py` on {meta['machine']} ({meta['cpus']} CPUs, load average "
             f"{meta['load']}), {meta['date']}. Each run: one `pytest --onnx-parity` process, empty cache.", ""]
    worst_all = []
    for r in results:
        lines.append(f"**{r['model']}** ({r['exporter']}): cold single item {r['cold_s']:.1f} s "
                     f"(process wall {r['cold_wall_s']:.1f} s).")
        lines.append("")
        lines.append("| matrix | items | verdicts | wall s | first item s | extra variant | extra s | x cold |")
        lines.append("| --- | ---: | --- | ---: | ---: | --- | ---: | ---: |")
        for m in r["matrices"]:
            for i, x in enumerate(m["extras"]):
                v = x["variant"]
                label = ", ".join(f"{k}={v[k]}" for k in ("precision", "ort_opt", "image_size", "preprocessing"))
                head = (f"{m['name']} | {m['items']} | {'/'.join(m['statuses'])} | {m['wall_s']:.1f} | {m['first_s']:.1f}"
                        if i == 0 else " | | | |")
                lines.append(f"| {head} | {label} | {x['total_s']:.1f} | {x['ratio']:.2f} |")
                worst_all.append(x["ratio"])
        lines.append("")
    if worst_all:
        meets = max(worst_all) <= TARGET
        lines.append(f"Extra variants cost {min(worst_all):.2f}x to {max(worst_all):.2f}x a cold single item "
                     f"(target at most {TARGET}x): {'met' if meets else 'not met'} for every variant measured."
                     + ("" if meets else " What an extra variant still pays: the model build (random weights are "
                        "re-made and calibrated per item), its session and every check, the per-layer one included."))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet18")
    ap.add_argument("--exporter", default="dynamo")
    ap.add_argument("--json", help="also save the measurements here")
    ap.add_argument("--from-json", help="render saved measurements instead of measuring")
    args = ap.parse_args()
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        results, meta = saved["results"], saved["meta"]
    else:
        meta = {"machine": platform.machine() + " " + platform.processor(), "cpus": os.cpu_count(),
                "load": " ".join(f"{x:.1f}" for x in os.getloadavg()), "date": time.strftime("%Y-%m-%d")}
        results = [measure(m, args.exporter) for m in args.models.split(",")]
        if args.json:
            Path(args.json).write_text(json.dumps({"results": results, "meta": meta}, indent=1))
    text = render(results, meta)
    write_block(DOC, MARKER, text, heading="## The deployment matrix")
    print(text)


if __name__ == "__main__":
    main()
