"""Evidence for the bf16 profile (``tolerances.RUNTIME_PROFILES['bf16']``): OpenVINO's CPU plugin running a float32
file in bf16.

For each model (random non-degenerate weights, dynamo export, a seeded batch of 4): the file runs under OpenVINO at
``INFERENCE_PRECISION_HINT=f32`` and ``bf16`` (OpenVINO's default on a CPU with AVX512_BF16 or AMX). *Clean* is
max |OpenVINO - torch float32| / RMS of the torch logits; *fault* the same figure in bf16 for the file with one
layer's weights scaled by 1.05 (``scale_layer_weights``) at each of the layers ``weight_params`` of
benchmarks/tolerances.py picks; the weakest is reported. With ``--layers``, each module's own error per layer
(``compare_layers``, teacher forced, its ONNX nodes run by OpenVINO in bf16 on torch's values at its inputs) on the
clean file and on each faulty one. On a CPU without bf16 instructions OpenVINO runs bf16 as float32: the script
says so and writes nothing. Writes the ``bf16-tolerances`` block of docs/tolerances.md.

    python benchmarks/bf16_tolerances.py [--layers] [--json PATH] [--from-json PATH] [MODEL ...]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from docblock import write_block

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tolerances import DOC, weight_params  # noqa: E402  (the float32 benchmark's helpers)

from pytest_onnx_parity import compare_layers, export_onnx, load_model  # noqa: E402
from pytest_onnx_parity.onnxfile.fp16 import rel_error  # noqa: E402
from pytest_onnx_parity.preprocessing.dataconfig import resolve_data_config  # noqa: E402
from pytest_onnx_parity.runtime.environment import cpu_info  # noqa: E402
from pytest_onnx_parity.runtime.forward import random_batch, torch_forward  # noqa: E402
from pytest_onnx_parity.runtime.runner import RunSettings, open_runner  # noqa: E402
from pytest_onnx_parity.testing import scale_layer_weights  # noqa: E402
from pytest_onnx_parity.tolerances import layer_tolerance, precision_profile  # noqa: E402

MODELS = ["resnet18", "vit_tiny_patch16_224", "efficientnet_b0", "convnext_atto"]
FAULT = 1.05
N_LAYERS = 4
MARKER = "bf16-tolerances"
BF16 = RunSettings(runtime="openvino(INFERENCE_PRECISION_HINT=bf16)")
F32 = RunSettings(runtime="openvino(INFERENCE_PRECISION_HINT=f32)")
DEFAULT = RunSettings(runtime="openvino")


def ov_logits(path: Any, x: np.ndarray, settings: RunSettings) -> tuple[np.ndarray, str | None]:
    runner = open_runner(path, settings)
    try:
        name = runner.get_inputs()[0].name
        return runner.run(None, {name: x})[0], runner.info().precision
    finally:
        runner.close()


def bf16_layers(model: Any, path: Any, x: np.ndarray) -> Any:
    """``compare_layers`` at the bf16 profile's layer tolerance, every ONNX run by OpenVINO in bf16."""
    return compare_layers(model, path, x, settings=BF16, **layer_tolerance(precision="bf16").layer_kwargs())


def judged(r: Any) -> float | None:
    if r.own_diff is None or not r.rms > 0:
        return None
    return (r.own_excess if r.own_excess is not None else r.own_diff) / r.rms


def own_max(cmp: Any) -> tuple[float, str]:
    rows = [(judged(r), r.name) for r in cmp.layers if judged(r) is not None]
    return max(rows) if rows else (float("nan"), "-")


def planted_own(cmp: Any, layer: str) -> float:
    rows = [judged(r) for r in cmp.layers if judged(r) is not None and (
        layer in (r.name, *r.fused, *r.aliases) or r.name.startswith(layer + "."))]
    return max(rows, default=float("nan"))


def measure(name: str, cache: str, work: Path, layers: bool) -> dict[str, Any]:
    model = load_model(name)
    x = random_batch(resolve_data_config(model), 4, 0)
    e = torch_forward(model, x)
    path = export_onnx(model, exporter="dynamo", cache_dir=cache).path
    row: dict[str, Any] = {"model": name, "rms": float(np.sqrt(np.mean(e.astype(np.float64) ** 2)))}
    for key, settings in (("f32", F32), ("bf16", BF16), ("default", DEFAULT)):
        a, row[f"{key}_precision"] = ov_logits(path, x, settings)
        row[key] = rel_error(e, a)
    if layers:
        cmp = bf16_layers(model, path, x[:1])
        row["own_clean"], row["own_clean_at"] = own_max(cmp)
        row["layers_clean_pass"] = cmp.passed
    faults = []
    for pname in weight_params(model, N_LAYERS + 2)[1:-1]:
        layer = pname.rsplit(".", 1)[0]
        bad = work / f"{name}-fault.onnx"
        onnx.save(scale_layer_weights(model, path, layer, FAULT), str(bad))
        f: dict[str, Any] = {"layer": layer, "effect": rel_error(e, ov_logits(bad, x, BF16)[0])}
        if layers:
            cmp = bf16_layers(model, bad, x[:1])
            f["own"] = planted_own(cmp, layer)
            f["named"] = cmp.first_divergence.name if cmp.first_divergence is not None else None
        faults.append(f)
    row["faults"] = faults
    row["fault"] = min(faults, key=lambda f: f["effect"])
    return row


def in_block(named: str | None, layer: str) -> bool:
    """Whether the module the per-layer check named is the planted one or shares its block."""
    if named is None:
        return False
    block = layer.rsplit(".", 1)[0]
    return named == layer or named == block or named.startswith(block + ".")


def write_doc(rows: list[dict[str, Any]], machine: str) -> None:
    prof = precision_profile("bf16")
    layers = all("own_clean" in r for r in rows)
    lines = ["## bf16 (OpenVINO)", "",
             f"Measured by `benchmarks/bf16_tolerances.py` ({time.strftime('%Y-%m-%d')}, {machine}); random "
             "non-degenerate weights, dynamo export, a seeded batch of 4, the float32 file run by OpenVINO's CPU plugin. "
             "Figures are max |OpenVINO - torch float32| / logit RMS: *f32* with `INFERENCE_PRECISION_HINT=f32`, *bf16* "
             "with `INFERENCE_PRECISION_HINT=bf16`, *default* with no option (the precision it ran in, read back from "
             f"the compiled model, in parentheses); *weakest 5% fault* is the smallest effect, in bf16, of one layer's "
             f"weights scaled by {FAULT} over {N_LAYERS} layers spread across the depth."
             + (" *own clean* is the largest own error per layer (teacher forced, OpenVINO in bf16) over every module "
                "of the clean file, *own 5% fault* the smallest own error of a planted module, *named* how many "
                "faulty files the per-layer check (at the bf16 profile) fails at a module of the planted block." if layers else ""), ""]
    head = "| model | logit RMS | f32 | bf16 | default | weakest 5% fault (layer) |"
    sep = "| --- | ---: | ---: | ---: | ---: | --- |"
    if layers:
        head += " own clean (module) | own 5% fault | named |"
        sep += " ---: | ---: | ---: |"
    lines += [head, sep]
    for r in rows:
        w = r["fault"]
        line = (f"| {r['model']} | {r['rms']:.3g} | {r['f32']:.1e} | {r['bf16']:.1e} | {r['default']:.1e} "
                f"({r['default_precision']}) | {w['effect']:.1e} (`{w['layer']}`) |")
        if layers:
            owns = [f["own"] for f in r["faults"]]
            named = sum(in_block(f["named"], f["layer"]) for f in r["faults"])
            line += f" {r['own_clean']:.1e} (`{r['own_clean_at']}`) | {min(owns):.1e} | {named} of {len(owns)} |"
        lines.append(line)
    clean = max(r["bf16"] for r in rows)
    weakest = [r["fault"]["effect"] for r in rows]
    caught = sum(e > prof.logits_atol_factor for e in weakest)
    lines += ["", f"Clean bf16 error {min(r['bf16'] for r in rows):.1e} to {clean:.1e} x RMS, float32 "
              f"{max(r['f32'] for r in rows):.1e} at most; the bf16 logits tolerance (`precision_profile('bf16')`: atol "
              f"{prof.logits_atol_factor:g} x RMS, rtol {prof.logits_rtol:g}) is {prof.logits_atol_factor / clean:.1f}x "
              f"above the largest. Weakest 5% fault per model {min(weakest):.1e} to {max(weakest):.1e} x RMS: "
              f"{caught} of {len(rows)} beyond the logits tolerance; as in fp16, the logits bound catches gross errors "
              "and each layer's own error the rest."]
    if layers:
        own_clean = max(r["own_clean"] for r in rows)
        owns = [f["own"] for r in rows for f in r["faults"]]
        named = sum(in_block(f["named"], f["layer"]) for r in rows for f in r["faults"])
        lines.append(f"Per layer: clean own error at most {own_clean:.1e} x RMS, the bf16 layer tolerance (rtol "
                     f"{prof.layer_rtol:g}, elem_rtol {prof.layer_elem_rtol:g}, atol {prof.layer_atol:g}) "
                     f"{prof.layer_rtol / own_clean:.1f}x above it; planted 5% faults' own error {min(owns):.1e} to "
                     f"{max(owns):.1e} x RMS: the per-layer check names the planted block for {named} of {len(owns)} "
                     "(the rest move their module less than bf16 rounding does; a 5% fault is at bf16's floor).")
    write_block(DOC, MARKER, "\n".join(lines), heading="")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="*", default=MODELS)
    parser.add_argument("--layers", action="store_true", help="also each module's own error per layer (slow)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--from-json", type=Path)
    args = parser.parse_args()
    info = cpu_info()
    machine = (f"{info['model']}, {os.cpu_count()} cores, flags {' '.join(f for f in info['flags'] or [] if 'bf16' in f) or 'no bf16'}, "
               f"{platform.machine()}")
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        write_doc(saved["rows"], saved["machine"])
        return 0
    cache, work = tempfile.mkdtemp(prefix="bf16-"), Path(tempfile.mkdtemp(prefix="bf16-files-"))
    rows = []
    for name in args.models:
        rows.append(measure(name, cache, work, args.layers))
        print(json.dumps(rows[-1]), flush=True)
        if args.json:
            args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    if any(r["bf16_precision"] != "bf16" for r in rows):
        print("OpenVINO ran bf16 as float32 here (no bf16 instructions): nothing written")
        return 1
    write_doc(rows, machine)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
