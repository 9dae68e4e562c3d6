"""Benchmarks of per-layer parity (``pytest_onnx_parity.compare_layers``).

``speed``: compare_layers against torch's own per-value verification,
``torch.onnx.verification.verify_onnx_program(program, args, compare_intermediates=True)``,
on the same model, weights and input (resnet18, vit_tiny_patch16_224), with the
time and the peak memory of each and of a plain inference (torch forward plus one
ONNX Runtime session and run). Every measurement runs in a fresh subprocess; its
peak is the process's VmHWM, reset (``/proc/self/clear_refs``) after the model is
loaded, so it covers the measured call only. Writes the section between
``<!-- layers-bench -->`` markers of docs/performance.md.

``teacher``: the cost of teacher forcing (each module's own error, ``own_diff``): ``compare_layers``
with ``teacher_forcing=False`` (the per-layer pass before it: one torch forward, one ONNX Runtime run)
against the default (the same plus one teacher-forced run), each in fresh processes, alternating, with the
default memory budget and with a small one that forces chunks: the wall and CPU time ratios and the peak
memory of each. Writes the section between ``<!-- layers-teacher -->`` markers of docs/performance.md.

``tolerance``: the evidence behind the per-layer tolerance defaults. Clean exports
of deep networks (both exporters): the largest per-layer error relative to the
layer's activation scale, along the depth. Then a 5% scale of the weights of one
layer at a time, at layers sampled across the depth: is the first divergence that
layer, and by how much does it exceed the tolerance. Writes the section between
``<!-- layers-tolerance -->`` markers of docs/layers.md.

    python benchmarks/bench_layers.py speed
    python benchmarks/bench_layers.py tolerance
    python benchmarks/bench_layers.py teacher
    python benchmarks/bench_layers.py all --no-write
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from docblock import write_block  # noqa: E402  (benchmarks/ is on sys.path: run as a script)

SPEED_MODELS = ["resnet18", "vit_tiny_patch16_224"]
MEMORY_CASES = [("resnet18", 16), ("vit_tiny_patch16_224", 16)]
SMALL_BUDGET = "128MiB"
TOLERANCE_MODELS = ["resnet50", "efficientnet_b0", "convnext_tiny", "vit_small_patch16_224", "vit_base_patch16_224"]
N_FAULTS = 8
FACTOR = 1.05


# --------------------------------------------------------------------------- subprocess workers


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _input(model: Any, batch: int) -> Any:
    import torch

    size = model.pretrained_cfg["input_size"]
    return torch.randn((batch, *size), generator=torch.Generator().manual_seed(1))


class _Clock:
    """Wall time and CPU time (user + system, all threads of the process)."""

    def __init__(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        self.wall = self.cpu = 0.0

    def stop(self) -> "_Clock":
        self.wall, self.cpu = time.perf_counter() - self.wall0, time.process_time() - self.cpu0
        return self

    def summary(self) -> dict[str, float]:
        return {"seconds": self.wall, "cpu_seconds": self.cpu, "min_seconds": self.wall, "runs": 1}

    @staticmethod
    def median(clocks: list["_Clock"]) -> dict[str, float]:
        walls = sorted(c.wall for c in clocks)
        cpus = sorted(c.cpu for c in clocks)
        return {"seconds": walls[len(walls) // 2], "cpu_seconds": cpus[len(cpus) // 2],
                "min_seconds": walls[0], "runs": len(clocks), "walls": walls, "cpus": cpus}

    @staticmethod
    def merge(*summaries: dict[str, Any]) -> dict[str, Any]:
        """Pool the samples of several runs: medians over all of them."""
        out = dict(summaries[-1])
        walls = sorted(w for s in summaries for w in s["walls"])
        cpus = sorted(c for s in summaries for c in s["cpus"])
        out.update(seconds=walls[len(walls) // 2], cpu_seconds=cpus[len(cpus) // 2], min_seconds=walls[0],
                   max_seconds=walls[-1], runs=len(walls), walls=walls, cpus=cpus,
                   extra_mib=max(s["extra_mib"] for s in summaries))
        return out


def _plain(model: Any, x: Any, onnx_path: str) -> None:
    """A plain inference of each side: a torch forward, one ONNX Runtime session and run."""
    import onnxruntime as ort
    import torch

    with torch.no_grad():
        model(x)
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    session.run(None, {session.get_inputs()[0].name: x.numpy()})


def _warm_up(model: Any, x: Any, onnx_path: str) -> None:
    """One plain inference first, as in a test run (and as verify_onnx_program's export does for torch)."""
    _plain(model, x, onnx_path)


def worker(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from pytest_onnx_parity.model.build import load_model

    torch.set_num_threads(int(job.get("threads", 2)))
    model = load_model(job["model"], "random")
    x = _input(model, job.get("batch", 1))
    kind = job["kind"]
    out: dict[str, Any] = {}
    if kind == "verify":
        import warnings

        from torch.onnx.verification import verify_onnx_program

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (x,), dynamo=True, verbose=False)
        base = _rss_kib("VmRSS")
        _reset_peak()
        clock = _Clock()
        infos = verify_onnx_program(program, (x,), compare_intermediates=True)
        out.update(clock.stop().summary())
        out["values"] = len(infos)
        out["max_abs_diff"] = max(float(i.max_abs_diff) for i in infos)
    elif kind == "layers":
        from pytest_onnx_parity.layers import compare_layers

        _warm_up(model, x, job["onnx"])
        base = _rss_kib("VmRSS")
        _reset_peak()
        clocks = []
        for i in range(job.get("repeat", 1)):
            if i and job.get("spread"):
                time.sleep(job["spread"])  # samples spread over time, as the machine's load comes and goes
            clock = _Clock()
            cmp = compare_layers(model, job["onnx"], x, memory_budget=job.get("budget"),
                                 teacher_forcing=job.get("teacher_forcing", True))
            clocks.append(clock.stop())
        out.update(_Clock.median(clocks))
        out["layers"] = len(cmp.layers)
        out["uncompared"] = len(cmp.uncompared)
        out["onnx_runs"] = cmp.onnx_runs
        out["forced_runs"] = cmp.forced_runs
        out["passed"] = cmp.passed
        out["peak_tensor_bytes"] = cmp.peak_tensor_bytes
    elif kind == "plain":
        _warm_up(model, x, job["onnx"])
        base = _rss_kib("VmRSS")
        _reset_peak()
        clocks = []
        for _ in range(job.get("repeat", 1)):
            clock = _Clock()
            _plain(model, x, job["onnx"])
            clocks.append(clock.stop())
        out.update(_Clock.median(clocks))
    else:
        raise SystemExit(f"unknown job kind {kind!r}")
    out["peak_mib"] = _rss_kib("VmHWM") / 1024
    out["base_mib"] = base / 1024
    out["extra_mib"] = out["peak_mib"] - out["base_mib"]
    return out


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS=str(job.get("threads", 2)), HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, __file__, "_worker", json.dumps(job)], capture_output=True, text=True, env=env, cwd=ROOT
    )
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"worker {job} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


# --------------------------------------------------------------------------- speed and memory


def export_static(name: str, batch: int, folder: Path) -> Path:
    """The dynamo export verify_onnx_program sees (static shapes), saved for compare_layers."""
    import warnings

    import torch

    from pytest_onnx_parity.model.build import load_model

    model = load_model(name, "random")
    x = _input(model, batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (x,), dynamo=True, verbose=False)
    path = folder / f"{name}-b{batch}.onnx"
    program.save(str(path))
    return path


def bench_speed(write: bool) -> str:
    rows = []
    mem_rows = []
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in SPEED_MODELS:
            path = export_static(name, 1, folder)
            plain = run_job({"kind": "plain", "model": name, "onnx": str(path), "repeat": 7})
            job = {"kind": "layers", "model": name, "onnx": str(path), "repeat": 6, "spread": 3}
            before = run_job(job)
            verify = run_job({"kind": "verify", "model": name})
            layers = _Clock.merge(before, run_job(job))  # half the samples before verify, half after
            print(f"{name}: compare_layers {layers['seconds']:.2f} s ({layers['cpu_seconds']:.2f} s CPU; "
                  f"{layers['min_seconds']:.2f} to {layers['max_seconds']:.2f} s), {layers['layers']} layers", flush=True)
            ratio = verify["seconds"] / layers["seconds"]
            cpu_ratio = verify["cpu_seconds"] / layers["cpu_seconds"]
            print(f"{name}: verify_onnx_program {verify['seconds']:.1f} s ({verify['cpu_seconds']:.1f} s CPU), "
                  f"{verify['values']} values: {ratio:.0f}x wall, {cpu_ratio:.0f}x CPU", flush=True)
            rows.append((name, plain, layers, verify, ratio))
        for name, batch in MEMORY_CASES:
            path = export_static(name, batch, folder)
            plain = run_job({"kind": "plain", "model": name, "onnx": str(path), "batch": batch})
            whole = run_job({"kind": "layers", "model": name, "onnx": str(path), "batch": batch})
            small = run_job({"kind": "layers", "model": name, "onnx": str(path), "batch": batch, "budget": SMALL_BUDGET})
            print(f"{name} batch {batch}: plain {plain['extra_mib']:.0f} MiB, layers {whole['extra_mib']:.0f} MiB, "
                  f"{SMALL_BUDGET} budget {small['extra_mib']:.0f} MiB in {small['onnx_runs']} chunks", flush=True)
            mem_rows.append((name, batch, plain, whole, small))
    text = speed_markdown(rows, mem_rows, (load_start, os.getloadavg()[0]))
    print(text)
    if write:
        write_block(ROOT / "docs" / "performance.md", "layers-bench", text, title="# Performance")
    return text


TEACHER_MODELS = [("resnet18", 1), ("efficientnet_b0", 1), ("vit_tiny_patch16_224", 1), ("convnext_atto", 1),
                  ("resnet18", 16)]
TEACHER_SMALL_BUDGET = "64MiB"


def bench_teacher(write: bool) -> str:
    """compare_layers with and without teacher forcing: time and memory ratios (fresh processes, alternating)."""
    rows = []
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, batch in TEACHER_MODELS:
            path = export_static(name, batch, folder)
            budgets = [None, TEACHER_SMALL_BUDGET] if batch > 1 else [None]
            for budget in budgets:
                res: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
                for _ in range(2):  # alternate, so a change of the machine's load hits both
                    for tf in (False, True):
                        res[tf].append(run_job({"kind": "layers", "model": name, "onnx": str(path), "batch": batch,
                                                "repeat": 3, "teacher_forcing": tf, "budget": budget}))
                before, forced = _Clock.merge(*res[False]), _Clock.merge(*res[True])
                row = {"model": name, "batch": batch, "budget": budget or "1GiB (default)", "before": before,
                       "forced": forced, "wall": forced["seconds"] / before["seconds"],
                       "cpu": forced["cpu_seconds"] / before["cpu_seconds"]}
                print(json.dumps({k: v for k, v in row.items() if k not in ("before", "forced")}), flush=True)
                rows.append(row)
    text = teacher_markdown(rows, (load_start, os.getloadavg()[0]))
    print(text)
    if write:
        write_block(ROOT / "docs" / "performance.md", "layers-teacher", text, title="# Performance")
    return text


def teacher_markdown(rows: list[dict[str, Any]], load: tuple[float, float]) -> str:
    lines = [
        "## Per-layer parity: the cost of each module's own error (teacher forcing)",
        "",
        f"Measured with `python benchmarks/bench_layers.py teacher` on {machine()}; load average {load[0]:.1f} when the",
        f"run began, {load[1]:.1f} when it ended. *before*: `compare_layers(..., teacher_forcing=False)`, the per-layer",
        "pass without own errors (one torch forward and one ONNX Runtime run per chunk); *with own errors*: the default,",
        "which adds one teacher-forced run per chunk (a second session on the rewritten graph). Each figure is the",
        "median of 6 calls in 2 fresh processes per variant, the variants alternating; memory is the process's peak",
        "RSS during the calls minus its RSS before them, and *copies* the largest total of intermediate tensors held",
        "at once (the memory budget bounds it; the boundaries a chunk's modules read are copied with it).",
        "",
        "| model | batch | memory budget | before | with own errors | time ratio (wall / CPU) | copies before / with |",
        "| --- | ---: | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        b, f = r["before"], r["forced"]
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['budget']} | {b['seconds']:.2f} s wall, {b['cpu_seconds']:.2f} s CPU, "
            f"+{b['extra_mib']:.0f} MiB, {b['onnx_runs']} run(s) | {f['seconds']:.2f} s wall, {f['cpu_seconds']:.2f} s CPU, "
            f"+{f['extra_mib']:.0f} MiB, {f['onnx_runs']} + {f['forced_runs']} forced run(s) | "
            f"**{r['wall']:.2f}x / {r['cpu']:.2f}x** | {b['peak_tensor_bytes'] / 2**20:.0f} / "
            f"{f['peak_tensor_bytes'] / 2**20:.0f} MiB |")
    worst = max(max(r["wall"], r["cpu"]) for r in rows)
    lines += ["", f"The largest ratio, wall or CPU, is {worst:.2f}x (the target is at most 2x)."]
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime
    import torch

    return (f"{os.cpu_count()} CPU cores ({cpu}), Linux, Python {platform.python_version()}, "
            f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; 2 threads each side")


def speed_markdown(rows: list[Any], mem_rows: list[Any], load: tuple[float, float]) -> str:
    lines = [
        "## Per-layer parity: `compare_layers` against `verify_onnx_program`",
        "",
        f"Measured with `python benchmarks/bench_layers.py speed` on {machine()}. The machine",
        f"is shared: load average {load[0]:.1f} when the run began, {load[1]:.1f} when it ended, on 2 cores,",
        "so absolute times are inflated; the `compare_layers` samples bracket the `verify_onnx_program` run.",
        "Random (non-degenerate) weights, batch 1, the same dynamo export (static shapes) for both.",
        "Each tool runs in a fresh process after one plain inference (a test has run the model",
        "before; `verify_onnx_program` needs the export, which runs the model too).",
        "`compare_layers`: median of 12 calls, 6 before `verify_onnx_program` and 6 after it, 3 s",
        "apart (fastest and slowest in brackets); plain inference: median of 7 calls;",
        "`verify_onnx_program`: one call.",
        "Wall time, and CPU time (user + system of all the process's threads): on this shared",
        "machine the CPU quota is often exhausted by other work and a process is then held back for",
        "whole scheduling periods, which inflates wall time at random (compare the fastest and slowest",
        "calls in brackets); CPU time is what the work costs. Memory: the",
        "process's peak RSS during the calls minus its RSS before them.",
        "",
        "| model | `compare_layers` | `verify_onnx_program(compare_intermediates=True)` | speed-up (wall / CPU) | plain inference |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, plain, layers, verify, ratio in rows:
        cpu_ratio = verify["cpu_seconds"] / layers["cpu_seconds"]
        lines.append(
            f"| {name} | {layers['seconds']:.2f} s wall ({layers['min_seconds']:.2f} to {layers['max_seconds']:.2f} s), "
            f"{layers['cpu_seconds']:.2f} s CPU; {layers['layers']} modules, "
            f"{layers['onnx_runs']} ORT run; +{layers['extra_mib']:.0f} MiB "
            f"| {verify['seconds']:.1f} s wall, {verify['cpu_seconds']:.1f} s CPU; {verify['values']} values; "
            f"+{verify['extra_mib']:.0f} MiB | **{ratio:.0f}x / {cpu_ratio:.0f}x** "
            f"| {plain['seconds']:.2f} s wall, {plain['cpu_seconds']:.2f} s CPU; +{plain['extra_mib']:.0f} MiB |"
        )
    lines += [
        "",
        "`verify_onnx_program` builds and runs one ONNX Runtime session per FX value; `compare_layers`",
        "asks for every module output as a graph output of one session and runs it once.",
        "",
        "### Memory: peak against plain inference",
        "",
        "Larger batches, so the intermediate tensors dominate. `plain` is a torch forward plus one",
        "ONNX Runtime session and run; the default budget (1 GiB of intermediate copies, both sides)",
        f"compares in one pass; `{SMALL_BUDGET}` forces chunks.",
        "",
        f"| model | batch | plain inference | `compare_layers` (default budget) | `compare_layers(memory_budget=\"{SMALL_BUDGET}\")` |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, batch, plain, whole, small in mem_rows:
        lines.append(
            f"| {name} | {batch} | {plain['seconds']:.2f} s, +{plain['extra_mib']:.0f} MiB "
            f"| {whole['seconds']:.2f} s, +{whole['extra_mib']:.0f} MiB, {whole['onnx_runs']} run, "
            f"copies {whole['peak_tensor_bytes'] / 2**20:.0f} MiB "
            f"| {small['seconds']:.2f} s, +{small['extra_mib']:.0f} MiB, {small['onnx_runs']} runs, "
            f"copies {small['peak_tensor_bytes'] / 2**20:.0f} MiB |"
        )
    lines += [
        "",
        "\"copies\" is the largest total of intermediate tensors (torch copies and ONNX Runtime outputs)",
        "held at once, which the budget bounds. On top of it come the two inferences themselves.",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- tolerance evidence


def bench_tolerance(write: bool, models: list[str]) -> str:
    import numpy as np
    import torch

    from pytest_onnx_parity.onnxfile.export import export_onnx
    from pytest_onnx_parity.layers import compare_layers
    from pytest_onnx_parity.testing import scale_layer_weights
    from pytest_onnx_parity.tolerances import LAYER_ATOL as DEFAULT_ATOL, LAYER_GROWTH as DEFAULT_GROWTH, LAYER_RTOL as DEFAULT_RTOL
    from pytest_onnx_parity.model.build import load_model

    torch.set_num_threads(2)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            model = load_model(name, "random")
            x = _input(model, 2)
            for exporter in ("dynamo", "torchscript"):
                t0 = time.perf_counter()
                path = export_onnx(model, Path(tmp) / f"{name}-{exporter}.onnx", exporter=exporter, use_cache=False).path
                export_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                clean = compare_layers(model, path, x)
                compare_s = time.perf_counter() - t0
                rel = [layer.max_rel_diff for layer in clean.layers]
                third = max(1, len(rel) // 3)
                row: dict[str, Any] = {
                    "model": name, "exporter": exporter, "layers": len(clean.layers),
                    "uncompared": len(clean.uncompared), "export_s": export_s, "compare_s": compare_s,
                    "clean_passed": clean.passed, "clean_max_rel": max(rel), "clean_median_rel": float(np.median(rel)),
                    "clean_rel_first_third": max(rel[:third]), "clean_rel_last_third": max(rel[-third:]),
                    "clean_max_ratio": max(layer.ratio for layer in clean.layers),
                    "clean_worst_layer": max(clean.layers, key=lambda layer: layer.max_rel_diff).name,
                    "clean_max_growth": max(
                        (layer.max_rel_diff / layer.upstream_rel for layer in clean.layers
                         if layer.upstream_rel > 0 and layer.max_rel_diff > 1e-4),
                        default=0.0,
                    ),
                    "faults": [],
                }  # fmt: skip
                for module in sample_layers(model, clean):
                    faulty = scale_layer_weights(model, path, module, FACTOR)
                    cmp = compare_layers(model, faulty, x)
                    first = cmp.first_divergence
                    planted = next(
                        (layer for layer in cmp.layers if module == layer.name or module in layer.fused), None
                    )
                    row["faults"].append({
                        "module": module,
                        "row": planted.name if planted else None,
                        "first_divergence": first.name if first else None,
                        "at_layer": bool(first and planted and first.name == planted.name),
                        "rel": planted.max_rel_diff if planted else None,
                        "ratio": planted.ratio if planted else None,
                        "jump": (planted.max_rel_diff / planted.upstream_rel if planted.upstream_rel > 0 else float("inf"))
                        if planted else None,
                        "failed_rows": len(cmp.failed),
                        "logits_rel": cmp.layers[-1].max_rel_diff,
                    })  # fmt: skip
                results.append(row)
                caught = sum(f["at_layer"] for f in row["faults"])
                print(f"{name} {exporter}: {row['layers']} layers, clean max rel {row['clean_max_rel']:.2g} "
                      f"(max {row['clean_max_ratio']:.3f} of tol, growth {row['clean_max_growth']:.1f}), "
                      f"faults at layer {caught}/{len(row['faults'])}, "
                      f"min fault rel {min(f['rel'] or 0 for f in row['faults']):.2g}", flush=True)
                for f in row["faults"]:
                    print(f"    {f['module']:40s} -> {f['first_divergence']}  rel {f['rel']:.3g} ratio {f['ratio']:.0f} "
                          f"jump {f['jump']:.3g} failed rows {f['failed_rows']} logits rel {f['logits_rel']:.2g}", flush=True)
    if os.environ.get("BENCH_LAYERS_JSON"):  # keep the measurements: --from-json re-renders the block
        Path(os.environ["BENCH_LAYERS_JSON"]).write_text(json.dumps(results, indent=1))
    text = tolerance_markdown(results, DEFAULT_ATOL, DEFAULT_RTOL, DEFAULT_GROWTH)
    print(text)
    if write:
        write_block(ROOT / "docs" / "layers.md", "layers-tolerance", text, heading="## Tolerance: the measurements")
    return text


def sample_layers(model: Any, clean: Any) -> list[str]:
    """Leaf modules with weights, evenly spread over the compared rows (first, last and between)."""
    modules = dict(model.named_modules())
    candidates = []
    for layer in clean.layers:
        for name in (*layer.fused, layer.name):
            module = modules.get(name)
            if module is not None and not list(module.children()) and getattr(module, "weight", None) is not None:
                if getattr(module.weight, "ndim", 0) >= 2:
                    candidates.append(name)
                    break
    if len(candidates) <= N_FAULTS:
        return candidates
    step = (len(candidates) - 1) / (N_FAULTS - 1)
    return [candidates[round(i * step)] for i in range(N_FAULTS)]


def tolerance_markdown(results: list[dict[str, Any]], atol: float, rtol: float, growth: float) -> str:
    lines = [
        "Measured with `python benchmarks/bench_layers.py tolerance` on " + machine() + ".",
        "Random non-degenerate weights (`load_model(name, \"random\")`), batch 2 at each model's own",
        f"input size, files from `export_onnx`. A fault is a {FACTOR:g}x scale of the weight of one",
        f"module ({N_FAULTS} modules per model, spread evenly over the depth). `rel` is",
        "`max_abs_diff / rms(torch activation)`; `growth` is a layer's `rel` over the `rel` it",
        "received from upstream (for clean layers, counted where `rel` > 1e-4, i.e. where the",
        f"`rtol` floor is not what decides). Defaults: `rtol` = {rtol:g}, `growth` = {growth:g}, `atol` = {atol:g}.",
        "",
        "| model | exporter | layers | clean: max `rel` (first / last third of the depth) | clean: max `growth` | clean: most of the tolerance used | faults named at their layer | faults: only that layer fails | faults: smallest `rel` | faults: smallest `growth` | faults: smallest multiple of the tolerance | faults: `rel` at the logits |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        faults = r["faults"]
        caught = sum(f["at_layer"] for f in faults)
        alone = sum(f.get("failed_rows") == 1 for f in faults)
        rels = [f["rel"] for f in faults if f["rel"] is not None]
        jumps = [f["jump"] for f in faults if f.get("jump") is not None]
        ratios = [f["ratio"] for f in faults if f["ratio"] is not None]
        logits = [f["logits_rel"] for f in faults]
        lines.append(
            f"| {r['model']} | {r['exporter']} | {r['layers']} | {r['clean_max_rel']:.1e} "
            f"({r['clean_rel_first_third']:.1e} / {r['clean_rel_last_third']:.1e}) "
            f"| {_growth(r.get('clean_max_growth', 0.0))} | {r['clean_max_ratio']:.3f} "
            f"| {caught}/{len(faults)} | {alone}/{len(faults)} | {min(rels):.1e} | {min(jumps):.0f} | {min(ratios):.0f}x "
            f"| {min(logits):.1e} to {max(logits):.1e} |"
        )
    worst_clean = max(r["clean_max_rel"] for r in results)
    worst_ratio = max(r["clean_max_ratio"] for r in results)
    worst_growth = max(r.get("clean_max_growth", 0.0) for r in results)
    least_fault = min(f["rel"] for r in results for f in r["faults"] if f["rel"] is not None)
    least_jump = min(f["jump"] for r in results for f in r["faults"] if f.get("jump") is not None)
    least_ratio = min(f["ratio"] for r in results for f in r["faults"] if f["ratio"] is not None)
    caught = sum(f["at_layer"] for r in results for f in r["faults"])
    alone = sum(f.get("failed_rows") == 1 for r in results for f in r["faults"])
    total = sum(len(r["faults"]) for r in results)
    lines += [
        "",
        f"Over all of them: {caught} of {total} planted faults are named at their layer, and for {alone} of {total}",
        "that layer is the only one that fails. Clean exports use at",
        f"most {worst_ratio:.2f} of a layer's tolerance; their largest `rel` is {worst_clean:.1e}, deep in the network",
        f"where it has been handed on from layer to layer (each layer adds at most {worst_growth:.1f}x to what it",
        f"receives). A fixed `rtol` = {rtol:g} without the `growth` term would leave that layer with",
        f"{worst_clean / rtol:.2f} of its tolerance used (`atol` left out). The weakest fault",
        f"shows `rel` = {least_fault:.1e} at its layer, {least_jump:.0f}x what that layer",
        f"received, {least_ratio:.0f}x its tolerance.",
    ]
    return "\n".join(lines)


def _growth(value: float) -> str:
    return f"{value:.1f}" if value > 0 else "- (no layer above 1e-4)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        print("RESULT " + json.dumps(worker(json.loads(argv[1]))), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["speed", "tolerance", "teacher", "all"], nargs="?", default="speed")
    parser.add_argument("--no-write", action="store_true", help="Print only; leave docs/ alone")
    parser.add_argument("--models", help="Comma-separated models for the tolerance run")
    parser.add_argument("--from-json", metavar="PATH", help="Rewrite the tolerance section from saved results "
                        "(BENCH_LAYERS_JSON=PATH of an earlier run) instead of measuring")
    args = parser.parse_args(argv)
    if args.from_json:
        from pytest_onnx_parity.tolerances import LAYER_ATOL as DEFAULT_ATOL, LAYER_GROWTH as DEFAULT_GROWTH, LAYER_RTOL as DEFAULT_RTOL

        text = tolerance_markdown(json.loads(Path(args.from_json).read_text()), DEFAULT_ATOL, DEFAULT_RTOL, DEFAULT_GROWTH)
        print(text)
        if not args.no_write:
            write_block(ROOT / "docs" / "layers.md", "layers-tolerance", text, heading="## Tolerance: the measurements")
        return 0
    if args.what in ("speed", "all"):
        bench_speed(not args.no_write)
    if args.what in ("teacher", "all"):
        bench_teacher(not args.no_write)
    if args.what in ("tolerance", "all"):
        models = args.models.split(",") if args.models else TOLERANCE_MODELS
        bench_tolerance(not args.no_write, models)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
