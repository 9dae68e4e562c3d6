"""Gate time cold and warm against the floor, per model, in one run.

floor = timm.create_model + bare torch.onnx.export (same exporter) + one torch
forward + ONNX Runtime session + one ONNX Runtime forward (batch 1).
cold  = check_parity(spec) with an empty cache (default options: every check,
        per-layer comparison included).
warm  = the same call again, the export now in the cache.

Each measurement runs in a fresh subprocess, timed after the imports, so no
process-level cache helps one side. Writes the table between the
``<!-- gate-bench -->`` markers of docs/performance.md.

    python benchmarks/bench_gate.py [--exporter dynamo] [--models a,b,c,d]
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

MODELS = ["resnet18", "efficientnet_b0", "convnext_atto", "vit_small_patch16_224.augreg_in21k_ft_in1k"]
DOC = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
MARK = "<!-- gate-bench -->"

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--exporter", default="dynamo")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    import os

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
    lines = [MARK, "", f"Gate time per model, exporter `{args.exporter}`, measured by `benchmarks/bench_gate.py` "
             f"in one run on {machine}. Targets: cold <= 1.25x floor, warm <= 0.35x cold.", "",
             "| model | floor s | cold s | warm s | cold / floor | warm / cold | status |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['floor_s']:.2f} | {r['cold_s']:.2f} | {r['warm_s']:.2f} | "
                     f"{r['cold_over_floor']:.2f}x | {r['warm_over_cold']:.2f}x | {r['status']} |")
    lines += ["", "Where a cold gate spends its time (seconds): " + "; ".join(
        f"{r['model']}: " + ", ".join(f"{k} {v:.2f}" for k, v in r["cold_timings"].items()) for r in rows), "", MARK]
    block = "\n".join(lines)
    print(block)
    if args.no_write:
        return
    text = DOC.read_text() if DOC.exists() else "# Performance\n"
    if MARK in text:
        head, _, rest = text.partition(MARK)
        _, _, tail = rest.partition(MARK)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n## Gate: cold and warm against the floor\n\n" + block + "\n"
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text)


if __name__ == "__main__":
    main()
