"""Evidence for outputs that are not logits: clean error against a planted 5% fault, per output.

For three models with random non-degenerate weights, one of each output kind the package
knows (``runtime/outputs.output_kind``): a pooled embedding (``resnet18(num_classes=0)``),
unpooled features (``resnet18(num_classes=0, global_pool='')``) and a ``features_only``
backbone of three outputs (``efficientnet_b0(features_only=True, out_indices=(2,3,4))``).
Each is exported by both exporters and run by torch and ONNX Runtime on the package's seeded
random batch (``runtime/forward.random_batch``, ``DEFAULT_BATCH`` samples, the default seed,
the model's data config). Each output is compared as the ``logits`` check compares it
(``checks/output_kinds.compare_outputs`` with the run's rule, ``tolerances.logits_tolerance``:
atol from that output's own RMS): its max abs diff, the atol applied, and the margin
atol / max abs diff. Then one layer's weights are scaled by 1.05 in the file
(``testing.scale_layer_weights``) and the same figures are taken on that faulty file
(fault / atol). For the embedding also 1 - the least per-sample cosine similarity
(``checks/output_kinds.cosine_per_sample``) on the clean fp32 file, the faulty file and an fp16 file
(``onnxfile/fp16.to_fp16`` of the dynamo export). Finally ``check_parity`` with
``layers="never"`` on the clean model and on each faulty file: the verdicts.

Writes the block ``output-kinds`` of docs/tolerances.md (benchmarks/docblock.py), nothing else.

    python benchmarks/output_kinds.py [--json PATH] [--no-write]   # measure (about a minute), write the block
    python benchmarks/output_kinds.py --from-json PATH             # rewrite the block from saved measurements
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from docblock import write_block

DOC = Path(__file__).resolve().parents[1] / "docs" / "tolerances.md"
MARKER = "output-kinds"
HEADING = "## Outputs that are not logits"
EXPORTERS = ("dynamo", "torchscript")
FAULT = 1.05
# (label, timm name, create_model keywords, the layer a fault is planted in)
MODELS = [
    ("resnet18(num_classes=0)", "resnet18", {"num_classes": 0}, "layer3.0.conv2"),
    ("resnet18(num_classes=0, global_pool='')", "resnet18", {"num_classes": 0, "global_pool": ""}, "layer3.0.conv2"),
    ("efficientnet_b0(features_only=True, out_indices=(2,3,4))", "efficientnet_b0",
     {"features_only": True, "out_indices": (2, 3, 4)}, "blocks.5.0.conv_pw"),
]


def compare(expected, actual, layout, precision: str = "fp32"):
    """Both sides as the ``logits`` check compares them, with the run's tolerance rule (no atol/rtol given)."""
    from pytest_onnx_parity.checks.output_kinds import compare_outputs
    from pytest_onnx_parity.tolerances import logits_tolerance

    return compare_outputs(expected, actual, layout, lambda e: logits_tolerance(e, precision=precision),
                           precision=precision)


def verdict(result: Any) -> dict[str, Any]:
    """A run's status and the checks that did not pass."""
    logits = result.check("logits")
    named = [line.strip() for line in (logits.message if logits is not None else "").splitlines() if "not close" in line]
    return {"status": result.status,
            "not_passed": [f"{c.name} {c.status}" for c in result.checks if c.status in ("failed", "error")],
            "logits_says": named, "error": result.error}


def measure_model(label: str, name: str, kwargs: dict[str, Any], layer: str, cache: str, work: Path) -> dict[str, Any]:
    import numpy as np
    import onnx

    from pytest_onnx_parity import check_parity, export_onnx, load_model
    from pytest_onnx_parity.checks.output_kinds import cosine_per_sample
    from pytest_onnx_parity.onnxfile.fp16 import to_fp16
    from pytest_onnx_parity.options import ParityOptions
    from pytest_onnx_parity.preprocessing.dataconfig import resolve_data_config
    from pytest_onnx_parity.runtime.forward import choose_outputs, ort_forward, random_batch, torch_forward_layout
    from pytest_onnx_parity.runtime.session import make_session
    from pytest_onnx_parity.testing import scale_layer_weights

    defaults = ParityOptions()
    model = load_model(name, **kwargs)
    x = random_batch(resolve_data_config(model), defaults.batch_size, defaults.seed)
    expected, layout = torch_forward_layout(model, x)

    def run_file(path: Any):
        session = make_session(path)
        choose_outputs(session, layout)
        return ort_forward(session, x)

    row: dict[str, Any] = {"model": label, "layer": layer, "kind": layout.kind, "batch": int(x.shape[0]),
                           "outputs": [s.label for s in layout.segments], "exporters": {}}
    for exporter in EXPORTERS:
        t = time.perf_counter()
        export = export_onnx(model, exporter=exporter, cache_dir=cache)
        clean_out = run_file(export.path)
        clean = compare(expected, clean_out, layout)
        faulty_path = work / f"{name}-{len(row['outputs'])}-{layout.kind}-{exporter}-fault.onnx"
        onnx.save(scale_layer_weights(model, export.path, layer, FAULT), str(faulty_path))
        faulty_out = run_file(faulty_path)
        faulty = compare(expected, faulty_out, layout)
        entry: dict[str, Any] = {
            # moved: the faulty file's output differs from the clean file's (False: the output lies upstream of the fault)
            "parts": [{"output": seg.label, "clean": c.max_abs_diff, "atol": c.atol, "rtol": c.rtol,
                       "clean_passed": c.passed, "fault": f.max_abs_diff, "fault_passed": f.passed,
                       "moved": not np.array_equal(seg.take(clean_out), seg.take(faulty_out))}
                      for (seg, c), (_, f) in zip(clean.parts, faulty.parts)],
            "clean_passed": clean.passed, "fault_passed": faulty.passed}
        if layout.kind == "embedding":
            entry["one_minus_cos"] = float(1.0 - cosine_per_sample(expected, clean_out).min())
            entry["one_minus_cos_fault"] = float(1.0 - faulty.cosine.min())
            entry["cos_passed"], entry["cos_fault_passed"] = clean.cosine_passed, faulty.cosine_passed
            if exporter == "dynamo":
                fp16 = to_fp16(export.path, work / f"{name}-embedding-fp16.onnx")
                half = compare(expected, run_file(fp16), layout, precision="fp16")
                entry["fp16"] = {"one_minus_cos": float(1.0 - half.cosine.min()), "passed": half.passed,
                                 "cos_passed": half.cosine_passed, "min_cosine": half.min_cosine}
        entry["verdict_clean"] = verdict(check_parity(model, exporter=exporter, cache_dir=cache, layers="never"))
        entry["verdict_fault"] = verdict(check_parity(model, onnx=str(faulty_path), exporter=exporter,
                                                      cache_dir=cache, layers="never"))
        entry["seconds"] = time.perf_counter() - t
        row["exporters"][exporter] = entry
        print(label, exporter, json.dumps(entry), flush=True)
    return row


def machine() -> dict[str, Any]:
    from pytest_onnx_parity.runtime.environment import environment

    env = environment()
    return {"date": time.strftime("%Y-%m-%d"), "cpu": env["cpu"], "machine": env["machine"], "cores": os.cpu_count(),
            "versions": {k: env[k] for k in ("torch", "timm", "onnx", "onnxruntime")}}


def constants() -> dict[str, Any]:
    from pytest_onnx_parity.options import ParityOptions
    from pytest_onnx_parity.tolerances import DEFAULT_TOLERANCES, INT8_MIN_COSINE, MIN_COSINE, MIN_NEIGHBOUR_SAMPLES

    rtol, factor = DEFAULT_TOLERANCES["float32"]
    return {"rtol": rtol, "atol_factor": factor, "min_cosine": dict(MIN_COSINE), "int8_min_cosine": INT8_MIN_COSINE,
            "min_neighbour_samples": MIN_NEIGHBOUR_SAMPLES, "seed": ParityOptions().seed}


def ratio(a: float, b: float) -> str:
    if b == 0:
        return "inf"
    r = a / b
    return f"{r:.0f}x" if r >= 10 else f"{r:.1f}x"


def markdown(saved: dict[str, Any]) -> str:
    m, k = saved["machine"], saved["constants"]
    versions = ", ".join(f"{n} {v}" for n, v in m["versions"].items())
    rows = saved["rows"]
    batch = rows[0]["batch"] if rows else 0
    lines = [(f"Measured by `benchmarks/output_kinds.py` ({m['date']}, {m['cpu']}, {m['machine']}, {m['cores']} cores, "
             f"{versions}, ONNX Runtime CPUExecutionProvider, {saved['seconds']:.0f} s in all); random non-degenerate "
             f"weights, both exporters, the package's seeded random batch ({batch} samples, seed {k['seed']}). Each "
             "output is compared as the `logits` check compares it: *clean* is its max abs diff on the clean fp32 "
             f"file, *atol* the tolerance applied to it ({k['atol_factor']:g} x that output's RMS, with rtol "
             f"{k['rtol']:g} on top), *margin* atol / clean. *5% fault* is the max abs diff of the file with one "
             f"layer's weights scaled by {FAULT} (`testing.scale_layer_weights`), *fault / atol* how far past the "
             "tolerance it lands."), "",
             "| model | layer faulted | exporter | output | clean | atol | margin | 5% fault | fault / atol |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    margins, faults = [], []
    for r in rows:
        for exporter, e in r["exporters"].items():
            for p in e["parts"]:
                margins.append((p["atol"] / p["clean"] if p["clean"] else float("inf"), r["model"], exporter, p["output"]))
                if p["moved"]:
                    faults.append((p["fault"] / p["atol"], r["model"], exporter, p["output"]))
                    fault, past = f"{p['fault']:.2g}", ratio(p["fault"], p["atol"])
                else:
                    fault, past = "unchanged (upstream)", "-"
                lines.append(f"| `{r['model']}` | `{r['layer']}` | {exporter} | {p['output']} | {p['clean']:.1e} | "
                             f"{p['atol']:.1e} | {ratio(p['atol'], p['clean'])} | {fault} | {past} |")
    emb = [r for r in rows if r["kind"] == "embedding"]
    for r in emb:
        lines += ["", (f"Embedding `{r['model']}`, 1 - the least per-sample cosine similarity to torch's "
                  f"(`MIN_COSINE`: fp32 {k['min_cosine']['fp32']:g}, i.e. 1 - cos up to {1 - k['min_cosine']['fp32']:.0e}; "
                  f"fp16 {k['min_cosine']['fp16']:g}, up to {1 - k['min_cosine']['fp16']:.0e}):"), "",
                  "| file | 1 - min cosine | within `MIN_COSINE` |", "| --- | ---: | --- |"]

        def yes(ok: bool) -> str:
            return "yes" if ok else "no"

        for exporter, e in r["exporters"].items():
            lines.append(f"| fp32, {exporter} | {e['one_minus_cos']:.1e} | {yes(e['cos_passed'])} |")
        for exporter, e in r["exporters"].items():
            if "fp16" in e:
                lines.append(f"| fp16 (`to_fp16` of the {exporter} file) | {e['fp16']['one_minus_cos']:.1e} | "
                             f"{yes(e['fp16']['cos_passed'])} |")
        for exporter, e in r["exporters"].items():
            lines.append(f"| fp32, {exporter}, 5% fault | {e['one_minus_cos_fault']:.1e} | {yes(e['cos_fault_passed'])} |")
    lines += ["", ("Verdicts of `check_parity(model, layers=\"never\")` on the clean export and "
              "`check_parity(model, onnx=FAULTY, layers=\"never\")` on the faulty file (the checks that did not pass):"), "",
              "| model | exporter | clean | 5% fault | the faulty file's `logits` message says |", "| --- | --- | --- | --- | --- |"]

    def shown(v: dict[str, Any]) -> str:
        return v["status"] + (f" ({', '.join(v['not_passed'])})" if v["not_passed"] else "")

    for r in rows:
        for exporter, e in r["exporters"].items():
            says = "; ".join(f"`{t}`" for t in e["verdict_fault"]["logits_says"]) or "-"
            lines.append(f"| `{r['model']}` | {exporter} | {shown(e['verdict_clean'])} | {shown(e['verdict_fault'])} | {says} |")
    lo_m, hi_m = min(margins), max(margins)
    lo_f, hi_f = min(faults), max(faults)
    lines += ["", (f"Smallest margin of a clean output: {ratio(lo_m[0], 1)} ({lo_m[1]}, {lo_m[2]}, {lo_m[3]}); largest "
              f"{ratio(hi_m[0], 1)}. Planted 5% faults land {ratio(lo_f[0], 1)} ({lo_f[1]}, {lo_f[2]}, {lo_f[3]}) to "
              f"{ratio(hi_f[0], 1)} past the tolerance of the outputs they move; outputs upstream of the faulted layer "
              "are unchanged. The random batch holds "
              f"{batch} samples, under `MIN_NEIGHBOUR_SAMPLES` = {k['min_neighbour_samples']}, so nearest neighbours "
              "are not judged on it.")]
    return "\n".join(lines)


def measure() -> dict[str, Any]:
    t = time.perf_counter()
    cache = tempfile.mkdtemp(prefix="kinds-")
    work = Path(tempfile.mkdtemp(prefix="kinds-files-"))
    rows = [measure_model(label, name, kwargs, layer, cache, work) for label, name, kwargs, layer in MODELS]
    return {"machine": machine(), "constants": constants(), "rows": rows, "seconds": time.perf_counter() - t}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", metavar="PATH", help="Also save the measurements to PATH")
    ap.add_argument("--from-json", metavar="PATH", help="Rewrite the block from saved measurements instead of measuring")
    ap.add_argument("--no-write", action="store_true", help="Print only; leave docs/ alone")
    args = ap.parse_args(argv)
    saved = json.loads(Path(args.from_json).read_text()) if args.from_json else measure()
    if args.json and not args.from_json:
        Path(args.json).write_text(json.dumps(saved, indent=1))
    block = markdown(saved)
    print(block)
    if not args.no_write:
        write_block(DOC, MARKER, block, heading=HEADING)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
