"""The cost of each runtime (``--onnx-parity-runtime``) against Python onnxruntime on one file: start, load,
one batch, and how far its outputs are from Python onnxruntime's.

Each runtime is measured in a fresh Python process (so "start" is what a run pays once: importing the runner,
starting Node.js or a browser). Runtimes not ready here get a row saying why. Writes the table into the
``runtimes-bench`` block of docs/performance.md, under the heading "Runtimes".

    PYTHONPATH=. python benchmarks/bench_runtimes.py [--model resnet18] [--batch 8] [--repeat 10] [RUNTIME ...]

start: the first ``open_runner`` of a one-node file (runner import, process start); load: ``open_runner`` of
the model's file after that; batch: the median of ``--repeat`` runs of one batch after a warm-up run;
agreement: the largest difference from Python onnxruntime's output on the same batch, in units of its RMS.
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


def rows(runtimes: list[str], model: str, batch: int, repeat: int, folder: Path) -> list[dict]:
    from pytest_onnx_parity import export_onnx
    from pytest_onnx_parity.runtime.catalog import runtime_status

    model_file = export_onnx(model, exporter="torchscript").path
    batch_file = folder / "batch.npy"
    np.save(batch_file, np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32))
    tiny = tiny_file(folder)
    results = []
    for runtime in [REFERENCE, *[r for r in runtimes if r != REFERENCE]]:
        status = runtime_status(runtime.split("(")[0])
        found = {"runtime": runtime}
        found.update(measure(runtime, model_file, batch_file, tiny, repeat) if status.ready else {"error": status.reason})
        print(runtime, {k: v for k, v in found.items() if k != "out"}, flush=True)
        results.append(found)
    ref = np.load(results[0]["out"]).astype(np.float64)
    rms = float(np.sqrt(np.mean(ref ** 2)))
    for r in results:
        if "out" in r:
            r["agreement"] = float(np.abs(np.load(r["out"]).astype(np.float64) - ref).max() / rms)
    return results


def table(results: list[dict], model: str, batch: int, repeat: int, load: float) -> str:
    ref = results[0]
    lines = [f"{model} (random weights, TorchScript export), batch {batch} of 3x224x224, the median of {repeat} runs; "
             f"{platform.machine()}, {os.cpu_count()} CPU cores, load average {load:.1f} when the run began (other work "
             "on the machine moves a figure by tens of percent between runs), "
             f"Python {platform.python_version()}. Measured by `benchmarks/bench_runtimes.py`.", "",
             "| runtime | versions | backend, threads | start | load | one batch | vs Python onnxruntime "
             "| agreement (max diff / RMS) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        if "error" in r:
            lines.append(f"| `{r['runtime']}` | not measured: {r['error']} | | | | | | |")
            continue
        versions = ", ".join(f"{k} {v}" for k, v in r["versions"].items())
        ratio = r["batch_s"] / ref["batch_s"] if "batch_s" in ref else float("nan")
        agree = "0 (bit-identical)" if r["agreement"] == 0 else f"{r['agreement']:.1e}"
        lines.append(f"| `{r['runtime']}` | {versions} | {r['backend']}, {r['threads']} | {r['start_s']:.2f} s | "
                     f"{r['load_s']:.2f} s | {r['batch_s'] * 1000:.0f} ms | {ratio:.2f}x | {agree} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runtimes", nargs="*", help="runtimes to measure (default: every runtime)")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--no-doc", action="store_true", help="print the table, do not write docs/performance.md")
    args = parser.parse_args()
    from pytest_onnx_parity.axes import RUNTIMES

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        results = rows(args.runtimes or list(RUNTIMES), args.model, args.batch, args.repeat, Path(tmp))
    text = table(results, args.model, args.batch, args.repeat, load)
    print(text)
    if not args.no_doc:
        write_block(DOC, "runtimes-bench", text, heading="## Runtimes")


if __name__ == "__main__":
    main()
