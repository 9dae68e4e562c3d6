"""Gate time cold and warm against the floor, per model, in one run.

floor = timm.create_model + bare torch.onnx.export (same exporter) + one torch
forward + ONNX Runtime session + one ONNX Runtime forward (batch 1).
cold  = check_parity(spec) with an empty cache (default options: every check,
        per-layer comparison included).
warm  = the same call again, the export now in the cache.

Each measurement runs in a fresh subprocess, timed after the imports, so no
process-level cache helps one side. Writes the table and its summary into the
``gate-bench`` block of docs/performance.md (benchmarks/docblock.py).

    python benchmarks/bench_gate.py [--exporter dynamo] [--models a,b,c,d] [--json PATH]
    python benchmarks/bench_gate.py --from-json PATH     # rewrite the block from saved measurements
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from docblock import write_block

MODELS = ["resnet18", "efficientnet_b0", "convnext_atto", "vit_small_patch16_224.augreg_in21k_ft_in1k"]
DOC = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
COLD_TARGET, WARM_TARGET = 1.25, 0.35

FLOOR = r"""
import json, sys, time, tempfile, warnings
import torch, timm, onnxruntime as ort, onnxscript, numpy as np
warnings.simplefilter("ignore")
name, exporter = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
torch.manual_seed(0)
m = timm.create_model(name).eval()
cfg = timm.data.resolve_model_data_config(m)
x = torch.randn(2, *cfg["input_size"])
path = tempfile.mkdtemp() + "/m.onnx"
with torch.no_grad():
    if exporter == "dynamo":
        torch.onnx.export(m, (x,), dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False).save(path)
    else:
        torch.onnx.export(m, (x,), path, dynamo=False, dynamic_axes={"input": {0: "batch"}}, input_names=["input"])
    y = m(x[:1])
s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
s.run(None, {s.get_inputs()[0].name: x[:1].numpy()})
print(json.dumps({"s": time.perf_counter() - t0}))
"""

GATE = r"""
import json, sys, time
import torch, timm, onnxruntime, onnxscript, onnx, numpy
from pytest_onnx_parity import check_parity
name, exporter, cache = sys.argv[1], sys.argv[2], sys.argv[3]
t0 = time.perf_counter()
r = check_parity(name, exporter=exporter, cache_dir=cache)
dt = time.perf_counter() - t0
print(json.dumps({"s": dt, "status": r.status, "hit": r.cache_hit, "timings": r.timings,
                  "checks": {c.name: c.status for c in r.checks}}))
"""


def run(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"benchmark step failed for {args}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def render(rows: list[dict], exporter: str, machine: str, load: tuple[float, float] | None) -> str:
    """The gate-bench block: the table, the targets met, where a cold gate spends its time."""
    quiet = (f" Load average {load[0]:.1f} when the run began, {load[1]:.1f} when it ended (other work on the"
             " machine slows both sides, not equally: compare runs made at a load near zero).") if load else ""
    lines = [f"Gate time per model, exporter `{exporter}`, measured by `benchmarks/bench_gate.py` "
             f"in one run on {machine}.{quiet} Targets: cold <= {COLD_TARGET:g}x floor, warm <= {WARM_TARGET:g}x cold.", "",
             "| model | floor s | cold s | warm s | cold / floor | warm / cold | status |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['floor_s']:.2f} | {r['cold_s']:.2f} | {r['warm_s']:.2f} | "
                     f"{r['cold_over_floor']:.2f}x | {r['warm_over_cold']:.2f}x | {r['status']} |")
    met = [r for r in rows if r["cold_over_floor"] <= COLD_TARGET and r["warm_over_cold"] <= WARM_TARGET]
    cold = [r["cold_over_floor"] for r in rows]
    warm = [r["warm_over_cold"] for r in rows]
    export = [r["cold_timings"]["export_s"] for r in rows if "export_s" in r["cold_timings"]]
    lines += ["", f"This run meets both targets for {len(met)} of {len(rows)} models: cold {min(cold):.2f}x to "
              f"{max(cold):.2f}x the floor, warm {min(warm):.2f}x to {max(warm):.2f}x cold"
              + (f"; the export alone takes {min(export):.1f} to {max(export):.1f} s of a cold gate." if export else ".")]
    lines += ["", "Where a cold gate spends its time (seconds): " + "; ".join(
        f"{r['model']}: " + ", ".join(f"{k} {v:.2f}" for k, v in r["cold_timings"].items()) for r in rows)]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--exporter", default="dynamo")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--no-write", action="store_true", help="Print only; leave docs/ alone")
    ap.add_argument("--json", metavar="PATH", help="Also save the measurements to PATH")
    ap.add_argument("--from-json", metavar="PATH", help="Rewrite the block from saved measurements instead of measuring")
    args = ap.parse_args()
    import os

    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        rows, machine, load, exporter = saved["rows"], saved["machine"], saved.get("load"), saved["exporter"]
    else:
        load_start = os.getloadavg()[0]
        rows = []
        for name in args.models.split(","):
            cache = tempfile.mkdtemp(prefix="bench-gate-")
            floor = run(FLOOR, name, args.exporter)["s"]
            cold = run(GATE, name, args.exporter, cache)
            warm = run(GATE, name, args.exporter, cache)
            assert not cold["hit"] and warm["hit"], (cold, warm)
            row = {"model": name, "floor_s": floor, "cold_s": cold["s"], "warm_s": warm["s"],
                   "cold_over_floor": cold["s"] / floor, "warm_over_cold": warm["s"] / cold["s"],
                   "status": cold["status"], "cold_timings": cold["timings"], "warm_timings": warm["timings"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
        machine = f"{os.cpu_count()} cores, {cpu_name()}, Python {platform.python_version()}"
        load, exporter = (load_start, os.getloadavg()[0]), args.exporter
        if args.json:
            Path(args.json).write_text(json.dumps({"exporter": exporter, "machine": machine, "load": load,
                                                   "rows": rows}, indent=1))
    block = render(rows, exporter, machine, load)
    print(block)
    if not args.no_write:
        write_block(DOC, "gate-bench", block, heading="## Gate: cold and warm against the floor", title="# Performance")


if __name__ == "__main__":
    main()
