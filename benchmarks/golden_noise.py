"""Evidence for the golden tolerance: how far a rerun moves from its golden, against what a real change moves.

For each model (random non-degenerate weights, the default dynamo export, the run's seeded batch):
one process records a golden (``check_parity(..., golden=DIR)``) with torch on 2 threads; fresh
processes rerun the same check with torch on 2, 1 and 4 threads (random weights are calibrated on
that many threads, and the file is exported afresh from them). *rerun* figures are the golden check's
own: the largest |now - golden| over the RMS of the golden's output, torch side and ONNX side, judged
at the strict tolerance at the recording thread count and at the other one elsewhere; each rerun also
runs its file in ONNX Runtime sessions of 1 and 4 intra-op threads, against ONNX Runtime's default
(the check's). Against them, in the recording process, two planted changes in golden units,
judged at both tolerances of ``tolerances.golden_tolerance`` (this machine and versions, and another):

* *forward x1.01*: one block's output scaled by 1.01 (a forward hook on the middle block, as a timm
  release that changed a layer would): the torch side against its golden;
* *weight x1.001*: one layer's weights scaled by 1.001 in the file (``scale_layer_weights``), for 4
  layers spread across the depth: the ONNX side against its golden, the weakest and the strongest.

Writes the ``golden-noise`` block of docs/ci.md.

    python benchmarks/golden_noise.py
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from docblock import write_block

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tolerances import weight_params  # noqa: E402  (the float32 benchmark's layer picker)

DOC = Path(__file__).resolve().parents[1] / "docs" / "ci.md"
MARKER = "golden-noise"
MODELS = ["test_resnet", "test_vit", "resnet18", "mobilenetv3_small_100", "efficientnet_b0", "convnext_atto"]
RECORD_THREADS = 2
RERUN_THREADS = (2, 1, 4)
ORT_THREADS = (1, 4)
BLOCK_SCALE, WEIGHT_SCALE, N_LAYERS = 1.01, 1.001, 4
FAST = {"layers": "never", "real_images": False}


def middle_block(model) -> str:  # type: ignore[no-untyped-def]
    """The middle block of the model: an element of a Sequential or ModuleList that is itself no list and holds
    at least two modules with weights (a residual block, a transformer block), in execution order."""
    import torch

    lists = (torch.nn.Sequential, torch.nn.ModuleList)
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, lists):
            continue
        for child_name, child in module.named_children():
            weighted = [m for m in child.modules() if m is not child and any(True for _ in m.parameters(recurse=False))]
            if not isinstance(child, lists) and len(weighted) >= 2:
                names.append(f"{name}.{child_name}" if name else child_name)
    return names[len(names) // 2]


def worker(threads: int, name: str, golden: str, cache: str, plant: bool) -> dict:
    import numpy as np
    import onnx
    import torch

    torch.set_num_threads(threads)
    from pytest_onnx_parity import check_parity, load_model
    from pytest_onnx_parity.checks.golden import compare_side
    from pytest_onnx_parity.preprocessing.dataconfig import resolve_data_config
    from pytest_onnx_parity.report.golden import inputs_digest, keep, read_golden
    from pytest_onnx_parity.runtime.forward import DEFAULT_BATCH, ort_forward, random_batch, torch_forward
    from pytest_onnx_parity.runtime.session import make_session
    from pytest_onnx_parity.testing import scale_layer_weights
    from pytest_onnx_parity.tolerances import golden_tolerance

    t = time.perf_counter()
    result = check_parity(name, golden=golden, cache_dir=cache, **FAST)
    check = result.check("golden")
    out = {"model": name, "threads": threads, "status": check.status, "run_s": time.perf_counter() - t,
           "torch": check.details.get("torch_rel_diff"), "onnx": check.details.get("onnx_rel_diff"),
           "tolerance": check.details.get("tolerance"), "path": check.details.get("path"), "result": result.status}
    g = read_golden(Path(check.details["path"]))
    model = load_model(name)
    x = random_batch(resolve_data_config(model), DEFAULT_BATCH, 0)
    assert inputs_digest(x) == g.inputs["sha256"], "the benchmark's batch is not the golden's"
    strict, loose = golden_tolerance(True), golden_tolerance(False)
    if not plant:  # ONNX Runtime's own thread count: the same file on n intra-op threads against its default session
        own = keep(ort_forward(make_session(result.onnx_path), x), g.segments)
        out["ort_threads"] = [compare_side(own, keep(ort_forward(make_session(result.onnx_path, threads=n), x),
                                                     g.segments), g.segments, strict).rel_diff for n in ORT_THREADS]
        return out
    out["bytes"] = Path(check.details["path"]).stat().st_size

    def judged(now: "np.ndarray", side: "np.ndarray") -> tuple[float, bool, bool]:
        d = compare_side(side, keep(now, g.segments), g.segments, strict)
        return d.rel_diff, not d.passed, not compare_side(side, keep(now, g.segments), g.segments, loose).passed

    block = middle_block(model)
    hook = dict(model.named_modules())[block].register_forward_hook(lambda m, i, o: o * BLOCK_SCALE)
    out["forward"] = (*judged(torch_forward(model, x), g.torch), block)
    hook.remove()
    faults = []
    work = Path(tempfile.mkdtemp(prefix="golden-noise-"))
    for param in weight_params(model, N_LAYERS + 2)[1:-1]:
        layer = param.rsplit(".", 1)[0]
        path = work / "fault.onnx"
        onnx.save(scale_layer_weights(model, result.onnx_path, layer, WEIGHT_SCALE), str(path))
        faults.append((*judged(ort_forward(make_session(path), x), g.onnx), layer))
    out["weights"] = sorted(faults)
    out["rms"] = float(np.sqrt(np.mean(g.torch.astype(np.float64) ** 2)))
    return out


def run_worker(threads: int, name: str, golden: str, cache: str, plant: bool) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, __file__, "--worker", str(threads), name, golden, cache] + (["--plant"] if plant else [])
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker {name} at {threads} threads failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    cache = tempfile.mkdtemp(prefix="golden-cache-")
    rows = []
    for name in MODELS:
        golden = tempfile.mkdtemp(prefix="golden-")
        first = run_worker(RECORD_THREADS, name, golden, cache, plant=True)
        assert first["status"] == "skipped", first
        reruns = [run_worker(n, name, golden, cache, plant=False) for n in RERUN_THREADS]
        rows.append({**first, "reruns": reruns})
        print(json.dumps(rows[-1]), flush=True)
    write_doc(rows)


def _fig(x: float) -> str:
    return "0" if x == 0 else f"{x:.1e}"


def _judged(fig: float, strict: bool, loose: bool) -> str:
    """A planted change's figure, with the tolerances that see it: S (this machine and versions), O (another)."""
    seen = "/".join(t for t, hit in (("S", strict), ("O", loose)) if hit) or "neither"
    return f"{_fig(fig)} ({seen})"


def write_doc(rows: list[dict]) -> None:
    import torch

    from pytest_onnx_parity.runtime.environment import library_versions
    from pytest_onnx_parity.tolerances import golden_tolerance

    (sa, sr), (oa, orr) = golden_tolerance(True), golden_tolerance(False)
    v = library_versions()
    machine = (f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}, "
               f"timm {v['timm']}, onnxruntime {v['onnxruntime']}")
    threads = " / ".join(map(str, RERUN_THREADS))
    ort = " / ".join(map(str, ORT_THREADS))
    lines = [f"Measured by `benchmarks/golden_noise.py` ({time.strftime('%Y-%m-%d')}, {machine}); random non-degenerate "
             f"weights, dynamo export, the run's seeded batch. A golden is recorded with torch on {RECORD_THREADS} threads, "
             f"then the check reruns in fresh processes with torch on {threads} threads (the weights calibrated and the "
             "file exported afresh on that many threads). Figures are the largest |now - golden| / RMS of the golden's "
             f"output. *ONNX Runtime threads*: each rerun's file on {ort} intra-op threads against ONNX Runtime's default. "
             f"*forward x{BLOCK_SCALE:g}* scales the middle block's output (torch side); *weight x{WEIGHT_SCALE:g}* scales "
             f"one layer's weights in the file (ONNX side), over {N_LAYERS} layers spread across the depth. In brackets, "
             f"the tolerances that fail the change: S, the golden's own machine, versions and thread count ({sa:g} x RMS + "
             f"{sr:g} x |golden|); O, elsewhere ({oa:g} x RMS + {orr:g} x |golden|).", "",
             f"| model | golden size | rerun, torch ({threads} threads) | rerun, ONNX | ONNX Runtime threads ({ort}) | "
             f"forward x{BLOCK_SCALE:g} (block) | weight x{WEIGHT_SCALE:g}, weakest (layer) | strongest |",
             "| --- | ---: | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        fwd, weak, strong = r["forward"], r["weights"][0], r["weights"][-1]
        ort_figs = " / ".join(_fig(max(x["ort_threads"][k] for x in r["reruns"])) for k in range(len(ORT_THREADS)))
        lines.append(f"| {r['model']} | {r['bytes'] / 1000:.0f} kB | {' / '.join(_fig(x['torch']) for x in r['reruns'])} | "
                     f"{' / '.join(_fig(x['onnx']) for x in r['reruns'])} | {ort_figs} | {_judged(*fwd[:3])} (`{fwd[3]}`) | "
                     f"{_judged(*weak[:3])} (`{weak[3]}`) | {_judged(*strong[:3])} |")
    reruns = [x for r in rows for x in r["reruns"]]
    same = [x for x in reruns if x["threads"] == RECORD_THREADS]
    other = [x for x in reruns if x["threads"] != RECORD_THREADS]

    def worst(xs: list[dict]) -> float:
        return max(max(x["torch"], x["onnx"]) for x in xs)

    def passing(xs: list[dict]) -> str:
        return f"{sum(x['status'] == 'passed' for x in xs)} of {len(xs)} pass"

    strict = sum(x["tolerance"] == [sa, sr] for x in same)
    ort_noise = max(max(x["ort_threads"]) for x in reruns)
    fwd_s, fwd_o = (sum(r["forward"][k] for r in rows) for k in (1, 2))
    weights = [w for r in rows for w in r["weights"]]
    w_s, w_o = (sum(w[k] for w in weights) for k in (1, 2))
    lines += ["", f"Reruns at the recording thread count ({strict} of {len(same)} judged at S): {passing(same)}, largest "
              f"difference {_fig(worst(same))} x RMS{' (bit for bit)' if worst(same) == 0 else ''}. At other thread counts "
              f"(judged at O): {passing(other)}, largest difference {_fig(worst(other))} x RMS, "
              f"{oa / max(worst(other), 1e-30):.0f}x below O and {'above' if worst(other) > sa else 'below'} S: random "
              "weights are calibrated on that many threads, so the thread count is part of the golden's machine. ONNX "
              f"Runtime's own thread count moves its outputs by at most {_fig(ort_noise)} x RMS. A block's output "
              f"x{BLOCK_SCALE:g} fails the golden in {fwd_s} of {len(rows)} models at S and {fwd_o} at O; a layer's weights "
              f"x{WEIGHT_SCALE:g} in {w_s} of {len(weights)} files at S and {w_o} at O."]
    write_block(DOC, MARKER, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        threads, name, golden, cache = int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
        print(json.dumps(worker(threads, name, golden, cache, "--plant" in sys.argv)))
    else:
        main()
