"""The cost of each runtime (``--onnx-parity-runtime``) against Python onnxruntime: start, load, one batch,
how far its outputs are from Python onnxruntime's, and what a whole gate item costs on it.

Each runtime is measured in a fresh Python process (so "start" is what a run pays once: importing the runner,
starting Node.js or a browser). Runtimes not ready here get a row saying why. Writes the table into the
``runtimes-bench`` block of docs/performance.md, under the heading "Runtimes".

    PYTHONPATH=. python benchmarks/bench_runtimes.py [--model resnet18] [--batch 8] [--repeat 10] [RUNTIME ...]

start: the first ``open_runner`` of a one-node file (runner import, process start); load: ``open_runner`` of
the model's file after that; batch: the median of ``--repeat`` runs of one batch after a warm-up run;
agreement: the largest difference from Python onnxruntime's output on the same batch, in units of its RMS.
The runtimes in ``--tiny-only`` (default: WebGPU, which runs on a software adapter where there is no GPU,
about 100 to 200 times slower) are measured on ``--tiny-model`` instead, each against Python onnxruntime on
that same model.

Gate items (``--gate-model``, default ``test_resnet``; ``--no-gate`` skips them): in a fresh process per
runtime and ``layers`` value, ``check_parity(MODEL, exporter="torchscript", runtime=R, layers=L)``, the export
cached beforehand: one item on Python onnxruntime (the imports), the first item on R (R's start: Node.js,
Chromium, a WASM compile), then ``--gate-pairs`` pairs alternating Python onnxruntime and R, so that each
ratio compares items run seconds apart under the same load. R's items in the pairs are the marginal cost of
one more gate item on R; the goal: a web item costs at most 3x the Python item of the same model (WebGPU on
a software adapter excepted).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from docblock import write_block

DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
REFERENCE = "onnxruntime"


def tiny_file(folder: Path) -> Path:
    """A one-node file (Relu): opening it measures a runtime's start, not a model's load."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = folder / "tiny.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString())
    onnx.checker.check_model(str(path))
    return path


def measure_one(runtime: str, model_file: Path, batch_file: Path, tiny: Path, repeat: int) -> dict:
    """Run in a fresh process: start, load, per-batch times and the outputs of ``runtime`` on one batch."""
    from pytest_onnx_parity.runtime.runner import RunSettings, open_runner

    settings = RunSettings(runtime=runtime)
    batch = np.load(batch_file)
    t = time.perf_counter()
    open_runner(tiny, settings).run(None, {"x": np.ones((1, 4), np.float32)})
    start = time.perf_counter() - t
    t = time.perf_counter()
    runner = open_runner(model_file, settings)
    load = time.perf_counter() - t
    feeds = {runner.get_inputs()[0].name: batch}
    out = runner.run(None, feeds)[0]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        runner.run(None, feeds)
        times.append(time.perf_counter() - t)
    info = runner.info()
    out_file = batch_file.with_name("out-" + re.sub(r"[^A-Za-z0-9]+", "_", runtime) + ".npy")
    np.save(out_file, out)
    runner.close()
    return {"start_s": start, "load_s": load, "batch_s": statistics.median(times), "threads": info.threads,
            "versions": info.versions, "backend": info.backend, "out": str(out_file)}


def measure(runtime: str, model_file: Path, batch_file: Path, tiny: Path, repeat: int) -> dict:
    """:func:`measure_one` in a fresh Python process; ``{"error": ...}`` when it failed there."""
    code = ("import json,sys; sys.path.insert(0, %r); from bench_runtimes import measure_one; from pathlib import Path; "
            "print('RESULT ' + json.dumps(measure_one(%r, Path(%r), Path(%r), Path(%r), %d)))"
            % (str(Path(__file__).parent), runtime, str(model_file), str(batch_file), str(tiny), repeat))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=3600)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        return {"error": (done.stderr.strip().splitlines() or ["no result"])[-1][:200]}
    return json.loads(line[len("RESULT "):])


def input_shape(model_file: Path, batch: int) -> tuple[int, ...]:
    """The file's first input shape with the batch dimension set to ``batch``."""
    import onnx

    dims = onnx.load(str(model_file), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return (batch, *[d.dim_value or 1 for d in dims[1:]])


def rows(runtimes: list[str], model: str, batch: int, repeat: int, folder: Path) -> list[dict]:
    from pytest_onnx_parity import export_onnx
    from pytest_onnx_parity.runtime.catalog import runtime_status

    model_file = Path(export_onnx(model, exporter="torchscript").path)
    sub = folder / re.sub(r"[^A-Za-z0-9]+", "_", model)
    sub.mkdir(parents=True, exist_ok=True)
    batch_file = sub / "batch.npy"
    shape = input_shape(model_file, batch)
    np.save(batch_file, np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    tiny = tiny_file(sub)
    results = []
    for runtime in [REFERENCE, *[r for r in runtimes if r != REFERENCE]]:
        status = runtime_status(runtime.split("(")[0])
        found = {"runtime": runtime, "model": model, "shape": shape, "repeat": repeat}
        found.update(measure(runtime, model_file, batch_file, tiny, repeat) if status.ready else {"error": status.reason})
        print(runtime, {k: v for k, v in found.items() if k != "out"}, flush=True)
        results.append(found)
    ref = np.load(results[0]["out"]).astype(np.float64)
    rms = float(np.sqrt(np.mean(ref ** 2)))
    for r in results:
        if "out" in r:
            r["agreement"] = float(np.abs(np.load(r["out"]).astype(np.float64) - ref).max() / rms)
    return results


def gate_one(model: str, runtime: str, layers: str, cache_dir: str, pairs: int) -> dict:
    """Gate items in this process: one on Python onnxruntime (it pays the imports), the first on ``runtime``
    (it pays the runtime's start), then ``pairs`` pairs alternating Python onnxruntime and ``runtime``, so that
    each ratio compares items run seconds apart under the same load."""
    import pytest_onnx_parity as parity

    def item(on: str) -> tuple[float, Any]:
        t = time.perf_counter()
        result = parity.check_parity(model, exporter="torchscript", runtime=on, layers=layers, cache_dir=cache_dir)
        return time.perf_counter() - t, result

    item(REFERENCE)
    first, result = item(runtime)
    ref, mine = [], []
    for _ in range(pairs):
        ref.append(item(REFERENCE)[0])
        took, result = item(runtime)
        mine.append(took)
    reason = result.error or next((c.message for c in result.checks if c.status not in ("passed", "skipped")
                                   and c.message), None)
    return {"first_s": first, "next_s": statistics.median(mine), "ref_s": statistics.median(ref),
            "ratios": [m / r for m, r in zip(mine, ref)], "status": result.status, "reason": (reason or "")[:200],
            "precision": (result.runtime_info or {}).get("precision"), "pairs": pairs}


def gate_measure(model: str, runtime: str, layers: str, cache_dir: str, pairs: int) -> dict:
    """:func:`gate_one` in a fresh Python process; ``{"error": ...}`` when it failed there."""
    code = ("import json,sys; sys.path.insert(0, %r); from bench_runtimes import gate_one; "
            "print('RESULT ' + json.dumps(gate_one(%r, %r, %r, %r, %d)))"
            % (str(Path(__file__).parent), model, runtime, layers, cache_dir, pairs))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=3600)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        return {"error": (done.stderr.strip().splitlines() or ["no result"])[-1][:200]}
    return json.loads(line[len("RESULT "):])


def gate_rows(runtimes: list[str], model: str, layer_modes: list[str], skip_layers: tuple[str, ...],
              folder: Path, pairs: int, tiny_only: tuple[str, ...], tiny_pairs: int) -> list[dict]:
    """Gate items per runtime and ``layers`` value, against Python onnxruntime; the export cached beforehand."""
    import pytest_onnx_parity as parity
    from pytest_onnx_parity.runtime.catalog import runtime_status

    cache_dir = str(folder / "gate-cache")
    parity.check_parity(model, exporter="torchscript", layers="never", cache_dir=cache_dir)
    results = []
    for layers in layer_modes:
        for runtime in [r for r in runtimes if r != REFERENCE]:
            base = runtime.split("(")[0]
            if layers != "never" and base in skip_layers:
                continue
            status = runtime_status(base)
            found = {"runtime": runtime, "layers": layers}
            n = tiny_pairs if base in tiny_only else pairs
            found.update(gate_measure(model, runtime, layers, cache_dir, n) if status.ready else {"error": status.reason})
            print("gate", runtime, layers, found, flush=True)
            results.append(found)
    return results


def machine() -> str:
    """The CPU's model name and its bf16 instructions (OpenVINO's default precision depends on them), read by the
    package's own probe (pytest_onnx_parity.runtime.environment)."""
    from pytest_onnx_parity.runtime.environment import cpu_info

    info = cpu_info()
    extra = [f for f in ("avx512_bf16", "amx_bf16") if f in set(info.get("flags") or ())]
    return f"{platform.machine()}, {info.get('model') or platform.machine()} ({', '.join(extra) if extra else 'no avx512_bf16/AMX'})"


def table(blocks: list[list[dict]], load: tuple[float, float]) -> str:
    lines = [(f"Random weights, TorchScript export; {machine()}, {os.cpu_count()} CPU cores, load average "
             f"{load[0]:.1f} when the run began and {load[1]:.1f} when it ended (other work on the machine moves a "
             f"figure by tens of percent between runs), Python {platform.python_version()}. "
             "Measured by `benchmarks/bench_runtimes.py`. One batch: the median of the runs after a warm-up run."), "",
             ("| model, batch | runtime | versions | backend, threads | start | load | one batch | vs Python onnxruntime "
              "| agreement (max diff / RMS) |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for results in blocks:
        ref = results[0]
        for r in results:
            where = f"{r['model']}, {'x'.join(map(str, r['shape']))} (median of {r['repeat']})"
            if "error" in r:
                lines.append(f"| {where} | `{r['runtime']}` | not measured: {r['error']} | | | | | | |")
                continue
            versions = ", ".join(f"{k} {v}" for k, v in r["versions"].items())
            ratio = r["batch_s"] / ref["batch_s"] if "batch_s" in ref else float("nan")
            agree = "0 (bit-identical)" if r["agreement"] == 0 else f"{r['agreement']:.1e}"
            lines.append(f"| {where} | `{r['runtime']}` | {versions} | {r['backend']}, {r['threads']} | "
                         f"{r['start_s']:.2f} s | {r['load_s']:.2f} s | {r['batch_s'] * 1000:.0f} ms | {ratio:.2f}x | "
                         f"{agree} |")
    return "\n".join(lines)


def gate_table(results: list[dict], model: str, tiny_only: tuple[str, ...]) -> str:
    """The gate items against Python onnxruntime's, and the 3x goal for the web runtimes."""
    lines = [(f"**A whole gate item** (`check_parity({model!r}, exporter=\"torchscript\", runtime=R, layers=L)`, "
             "export cached), one fresh process per row: an item on Python onnxruntime first (it pays the imports), "
             "then the *first item* on R (it pays R's start: Node.js, Chromium, compiling WebAssembly), then pairs "
             "alternating Python onnxruntime and R. *Next items* is the median of R's items in the pairs, the "
             "marginal cost of one more gate item on R; *Python* the median of the Python onnxruntime items between "
             "them, run seconds apart under the same load; the ratio is the median of the pairs' ratios."), "",
             ("| layers | runtime | first item on R | next items on R | Python onnxruntime | next / Python (pairs) "
              "| first / Python | status |"),
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    verdicts = []
    for r in results:
        if "error" in r:
            lines.append(f"| {r['layers']} | `{r['runtime']}` | not measured: {r['error']} | | | | | |")
            continue
        ratio = statistics.median(r["ratios"])
        status = r["status"]
        if status != "passed" and r.get("reason"):
            status += ": " + r["reason"].split(" (")[0].split(": ")[0]
        lines.append(f"| {r['layers']} | `{r['runtime']}` | {r['first_s']:.1f} s | {r['next_s']:.1f} s | "
                     f"{r['ref_s']:.1f} s | {ratio:.2f}x ({r['pairs']}) | {r['first_s'] / r['ref_s']:.2f}x | {status} |")
        base = r["runtime"].split("(")[0]
        if base.startswith("onnxruntime-web"):
            verdicts.append((r["runtime"], r["layers"], ratio, base in tiny_only))
    lines.append("")
    held = [v for v in verdicts if not v[3]]
    ok = [v for v in held if v[2] <= 3.0]
    lines.append(
        "Goal: a web item (next items, the marginal cost) at most 3x the Python item of the same model, WebGPU on a "
        f"software adapter excepted: met for {len(ok)} of {len(held)} web items"
        + ("" if len(ok) == len(held) else " (not met: " + ", ".join(
            f"`{v[0]}` layers={v[1]} {v[2]:.1f}x" for v in held if v[2] > 3.0) + ")")
        + "".join(f"; `{v[0]}` layers={v[1]}: {v[2]:.1f}x (excepted: a software adapter here)"
                  for v in verdicts if v[3])
        + ".")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runtimes", nargs="*", help="runtimes to measure (default: every runtime)")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--tiny-model", default="test_resnet", help="the model of the --tiny-only runtimes")
    parser.add_argument("--tiny-only", default="onnxruntime-web-webgpu",
                        help="comma list of runtimes measured on --tiny-model only (default: WebGPU)")
    parser.add_argument("--tiny-repeat", type=int, default=3)
    parser.add_argument("--gate-model", default="test_resnet")
    parser.add_argument("--gate-layers", default="never,always", help="comma list of layers values for the gate items")
    parser.add_argument("--gate-skip-layers", default="onnxruntime-web-webgpu",
                        help="comma list of runtimes whose gate items run with layers=never only")
    parser.add_argument("--gate-pairs", type=int, default=3, help="Python/R item pairs per gate row")
    parser.add_argument("--tiny-pairs", type=int, default=2, help="pairs for the --tiny-only runtimes' gate rows")
    parser.add_argument("--no-gate", action="store_true", help="skip the gate items")
    parser.add_argument("--no-doc", action="store_true", help="print the table, do not write docs/performance.md")
    parser.add_argument("--doc", type=Path, default=DOC, help="the document to write (default docs/performance.md)")
    args = parser.parse_args()
    from pytest_onnx_parity.axes import RUNTIMES

    wanted = args.runtimes or [*RUNTIMES, "openvino(INFERENCE_PRECISION_HINT=f32)"]
    tiny_only = tuple(x for x in args.tiny_only.split(",") if x)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        blocks = [rows([r for r in wanted if r.split("(")[0] not in tiny_only], args.model, args.batch, args.repeat,
                       Path(tmp))]
        tiny = [r for r in wanted if r.split("(")[0] in tiny_only]
        if tiny:
            blocks.append(rows(tiny, args.tiny_model, args.batch, args.tiny_repeat, Path(tmp)))
        gates = [] if args.no_gate else gate_rows(
            wanted, args.gate_model, [x for x in args.gate_layers.split(",") if x],
            tuple(x for x in args.gate_skip_layers.split(",") if x), Path(tmp), args.gate_pairs, tiny_only,
            args.tiny_pairs)
    text = table(blocks, (load, os.getloadavg()[0]))
    if gates:
        text += "\n\n" + gate_table(gates, args.gate_model, tiny_only)
    print(text)
    if not args.no_doc:
        write_block(args.doc, "runtimes-bench", text, heading="## Runtimes")


if __name__ == "__main__":
    main()
