"""Evidence for the fp16 tolerances, and for the own-error tolerance of the per-layer check.

For each model (random non-degenerate weights, dynamo export): the float32 export is
converted by :func:`pytest_onnx_parity.onnxfile.fp16.to_fp16` twice, with the fragile ops
kept in float32 (the default) and with everything in float16 (``keep_fp32_ops=()``).
*Clean* is max |fp16 - torch float32| / RMS of the torch logits on a seeded batch of 4;
*fault* is the same figure for the default fp16 file with one layer's weights scaled by
1.05 (``scale_layer_weights``), for each of the layers picked by ``weight_params`` of
benchmarks/tolerances.py; the weakest is reported.

Per layer (``compare_layers`` on one image): each module's *own error* (``own_diff / rms``: its ONNX
nodes on torch's values at its inputs) on the clean float32 and float16 files, against the own error of
the planted module in each faulty file (float16 and float32): the separation that the per-precision
layer tolerance (``PRECISION_PROFILES[...].layer_rtol``) sits in. The gate itself (``check_parity`` with
its defaults) runs on the clean fp16 file and on the weakest fault's file: the clean one must pass, the
faulty one fail naming a module of the planted block. Non-finite outputs are reported with the first
node that produced them. Writes the ``fp16-tolerances`` and ``own-error`` blocks of docs/tolerances.md.

    python benchmarks/precision_tolerances.py [--json PATH] [--from-json PATH] [MODEL ...]
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

import numpy as np
from docblock import write_block
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tolerances import DOC, weight_params  # noqa: E402  (the float32 benchmark's helpers)

from pytest_onnx_parity import check_parity, export_onnx, load_model  # noqa: E402
from pytest_onnx_parity.preprocessing.dataconfig import resolve_data_config  # noqa: E402
from pytest_onnx_parity.runtime.session import make_session  # noqa: E402
from pytest_onnx_parity.runtime.forward import ort_forward, random_batch, torch_forward  # noqa: E402
from pytest_onnx_parity.onnxfile.fp16 import first_nonfinite, rel_error, to_fp16  # noqa: E402
from pytest_onnx_parity.tolerances import PRECISION_PROFILES  # noqa: E402
from pytest_onnx_parity.tolerances import LAYER_ATOL, LAYER_RTOL, layer_tolerance  # noqa: E402

from pytest_onnx_parity.testing import scale_layer_weights  # noqa: E402
from pytest_onnx_parity.layers import compare_layers  # noqa: E402

MODELS = ["resnet18", "resnet50", "efficientnet_b0", "mobilenetv3_small_100", "convnext_atto", "regnety_002",
          "vit_tiny_patch16_224", "deit_tiny_patch16_224", "mixer_s16_224", "swin_tiny_patch4_window7_224",
          "ghostnet_100", "densenet121"]
FAULT = 1.05
N_LAYERS = 4
MARKER = "fp16-tolerances"
OWN_MARKER = "own-error"


def module_of(param: str) -> str:
    return param.rsplit(".", 1)[0]


def judged(r) -> float | None:
    """What the tolerance judges of a row, in units of its RMS: ``own_excess / rms`` (``own_diff / rms`` when
    each element gets no room of its own, as in float32)."""
    if r.own_diff is None or not r.rms > 0:
        return None
    return (r.own_excess if r.own_excess is not None else r.own_diff) / r.rms


def planted_own(cmp, layer: str) -> float:
    """The fault's own error: the largest over the rows of the planted module (itself, a fused partner, an alias)
    and of the modules inside it (a weight of a container, such as Swin's relative position bias table, is read
    by one of its parts: its softmax)."""
    rows = [judged(r) for r in cmp.layers if judged(r) is not None and (
        layer in (r.name, *r.fused, *r.aliases) or r.name.startswith(layer + "."))]
    return max(rows, default=float("nan"))


def in_block(named: str | None, layer: str) -> bool:
    """Whether the named module is the planted one or shares its block (its parent path)."""
    if named is None:
        return False
    block = layer.rsplit(".", 1)[0]
    return named == layer or named.startswith(block + ".") or named == block


def own_max(cmp) -> tuple[float, str]:
    rows = [(judged(r), r.name) for r in cmp.layers if judged(r) is not None]
    return max(rows) if rows else (float("nan"), "-")


def measure(name: str, cache: str, work: Path) -> dict:
    kw16 = layer_tolerance(precision="fp16").layer_kwargs()
    model = load_model(name)
    x = random_batch(resolve_data_config(model), 4, 0)
    e = torch_forward(model, x)
    exp = export_onnx(model, exporter="dynamo", cache_dir=cache)
    row: dict = {"model": name, "rms": float(np.sqrt(np.mean(e.astype(np.float64) ** 2)))}
    t = time.perf_counter()
    safe = to_fp16(exp.path, work / f"{name}-fp16.onnx")
    row["convert_s"] = time.perf_counter() - t
    allfp16 = to_fp16(exp.path, work / f"{name}-fp16-all.onnx", keep_fp32_ops=())
    for key, path in (("clean", safe), ("clean_all", allfp16)):
        a = ort_forward(make_session(path), x)
        row[key] = rel_error(e, a)
        if not np.isfinite(a).all():
            row[f"{key}_overflow"] = first_nonfinite(path, x[:1])
    clean32 = compare_layers(model, exp.path, x[:1])
    clean16 = compare_layers(model, safe, x[:1], **kw16)
    row["own32_clean"], row["own32_clean_at"] = own_max(clean32)
    row["own16_clean"], row["own16_clean_at"] = own_max(clean16)
    row["layer_clean_pass"] = clean16.passed
    row["layer_clean_first"] = clean16.first_divergence.name if clean16.first_divergence else None
    faults = []
    for pname in weight_params(model, N_LAYERS + 2)[1:-1] or weight_params(model, N_LAYERS):
        layer = module_of(pname)
        f: dict = {"layer": layer}
        for precision, src, kw in (("16", safe, kw16), ("32", exp.path, {})):
            try:
                bad = scale_layer_weights(model, src, layer, FAULT)
            except Exception as exc:  # a layer the planter cannot find: recorded, not hidden
                f["problem"] = f"not planted: {type(exc).__name__}"
                break
            path = work / f"{name}-fault{precision}.onnx"
            onnx.save(bad, str(path))
            if precision == "16":
                f["effect"] = rel_error(e, ort_forward(make_session(path), x))
            cmp = compare_layers(model, path, x[:1], **kw)
            first = cmp.first_divergence
            f[f"own{precision}"] = planted_own(cmp, layer)
            f[f"named{precision}"] = first.name if first is not None else None
            f[f"in_block{precision}"] = in_block(f[f"named{precision}"], layer)
        faults.append(f)
    row["faults"] = faults
    planted = [f for f in faults if "effect" in f and np.isfinite(f["effect"])]
    weakest = min(planted, key=lambda f: f["effect"])
    row["fault"] = weakest
    path = work / f"{name}-weakest.onnx"
    onnx.save(scale_layer_weights(model, safe, weakest["layer"], FAULT), str(path))
    t = time.perf_counter()
    gate = check_parity(model, onnx=path, cache_dir=cache)
    row["gate_s"] = time.perf_counter() - t
    row["gate_fault"] = {"status": gate.status, "first": gate.first_divergence,
                         "in_block": in_block(gate.first_divergence, weakest["layer"]),
                         "precision": (gate.variant or {}).get("precision")}
    gate = check_parity(model, onnx=safe, cache_dir=cache)
    row["gate_clean"] = {"status": gate.status, "first": gate.first_divergence,
                         "failing": [c.name for c in gate.checks if c.status != "passed" and c.status != "skipped"]}
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="*", default=MODELS)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--from-json", type=Path)
    args = parser.parse_args()
    if args.from_json:
        write_doc(json.loads(args.from_json.read_text()))
        return
    cache = tempfile.mkdtemp(prefix="tol16-")
    work = Path(tempfile.mkdtemp(prefix="tol16-files-"))
    rows = []
    for name in args.models:
        row = measure(name, cache, work)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
    write_doc(rows)


def _yes(ok: bool, text: str = "") -> str:
    return "yes" if ok else f"no{': ' + text if text else ''}"


def write_doc(rows: list[dict]) -> None:
    import torch

    prof = PRECISION_PROFILES["fp16"]
    factor = prof.logits_atol_factor
    machine = f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, torch {torch.__version__}"
    lines = ["## fp16 files", "",
             f"Measured by `benchmarks/precision_tolerances.py` ({time.strftime('%Y-%m-%d')}, {machine}, ONNX Runtime "
             "CPUExecutionProvider); random non-degenerate weights, dynamo export, converted by "
             "`pytest_onnx_parity.onnxfile.fp16.to_fp16`, a seeded batch of 4. Figures are max |fp16 - torch float32| / logit RMS.",
             "*clean* keeps the fragile ops (`FP16_KEEP_FP32_OPS`) in float32, *clean, all fp16* converts them too;",
             f"*weakest 5% fault* is the smallest effect of one layer's weights scaled by {FAULT} (in the fp16 file) over "
             f"{N_LAYERS} layers spread across the depth; *gate names* is `check_parity` with its defaults on that faulty "
             "file (its status and the module it names: *in block* when it is the planted module, its fused partner or "
             "a module of the planted block); *clean gate* is `check_parity` on the clean fp16 file.", "",
             "| model | logit RMS | clean | clean, all fp16 | weakest 5% fault (layer) | gate names | in block | clean gate | convert s |",
             "| --- | ---: | ---: | ---: | --- | --- | --- | --- | ---: |"]
    for r in rows:
        w = r["fault"]
        all16 = f"{r['clean_all']:.1e}"
        if "clean_all_overflow" in r:
            o = r["clean_all_overflow"]
            all16 = f"overflow at `{o['module']}` ({o['op']})"
        g, c = r["gate_fault"], r["gate_clean"]
        lines.append(f"| {r['model']} | {r['rms']:.3g} | {r['clean']:.1e} | {all16} | {w['effect']:.1e} (`{w['layer']}`) | "
                     f"{g['status']}: `{g['first']}` | {_yes(g['in_block'])} | "
                     f"{c['status']}{' (' + ', '.join(c['failing']) + ')' if c['failing'] else ''} | {r['convert_s']:.2f} |")
    cleans = [r["clean"] for r in rows]
    effects = [r["fault"]["effect"] for r in rows]
    by_logits = sum(f > factor for f in effects)
    caught = sum(r["gate_fault"]["status"] == "failed" and r["gate_fault"]["in_block"] for r in rows)
    clean_ok = sum(r["gate_clean"]["status"] == "passed" for r in rows)
    lines += ["", f"Clean error {min(cleans):.1e} to {max(cleans):.1e} x RMS; the fp16 logits tolerance "
              f"(`PRECISION_PROFILES['fp16']`: atol {factor:g} x RMS, rtol {prof.logits_rtol:g}) is "
              f"{factor / max(cleans):.1f}x above the largest. Weakest planted 5% fault per model: "
              f"{min(effects):.1e} to {max(effects):.1e} x RMS; {by_logits} of {len(effects)} exceed the logits tolerance. "
              f"The gate, judging each layer on its own error, fails {caught} of {len(rows)} faulty files naming a module "
              f"of the planted block, and passes {clean_ok} of {len(rows)} clean fp16 files.", ""]
    write_block(DOC, MARKER, "\n".join(lines))
    write_own(rows)
    print("\n".join(lines))


def write_own(rows: list[dict]) -> None:
    rtol16 = PRECISION_PROFILES["fp16"].layer_rtol
    lines = ["## Own error per layer (teacher forcing)", "",
             "Measured by `benchmarks/precision_tolerances.py` on the models of the fp16 table (one seeded image, "
             "dynamo export). A module's *own error* is what the tolerance judges of its ONNX nodes run on torch's own "
             "values at its inputs, against torch's output, in units of the torch activation's RMS: `own_diff / rms` in "
             "float32; in float16, where each element also has `layer_elem_rtol` of its own magnitude, `own_excess / "
             "rms` (`max(|torch - onnx| - elem_rtol * |torch|) / rms`). *clean* is the largest over "
             "every module of the clean file; *5% fault* the smallest, over the "
             f"{N_LAYERS} planted layers, of the planted module's own error (the largest among its row, a fused partner's, "
             "and those of the modules inside it); *separation* is their ratio. *named* counts "
             "the faulty files whose first divergence (the first module whose own error is out of tolerance) is in the "
             f"planted block. The per-layer tolerance is `atol + rtol * rms`: float32 rtol {LAYER_RTOL:g}, float16 rtol "
             f"{rtol16:g} (`PRECISION_PROFILES['fp16'].layer_rtol`) with `layer_elem_rtol` "
             f"{PRECISION_PROFILES['fp16'].layer_elem_rtol:g}, atol {LAYER_ATOL:g} and "
             f"{PRECISION_PROFILES['fp16'].layer_atol:g}.", "",
             "| model | fp32 clean (module) | fp32 5% fault | fp32 separation | fp32 named | fp16 clean (module) | "
             "fp16 5% fault | fp16 separation | fp16 named |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    sep32, sep16, clean32, clean16, fault32, fault16 = [], [], [], [], [], []
    for r in rows:
        faults = [f for f in r["faults"] if "problem" not in f]
        f32 = min(f["own32"] for f in faults)
        f16 = min(f["own16"] for f in faults)
        n32 = sum(f["in_block32"] for f in faults)
        n16 = sum(f["in_block16"] for f in faults)
        s32, s16 = f32 / r["own32_clean"], f16 / r["own16_clean"]
        sep32.append(s32), sep16.append(s16)
        clean32.append(r["own32_clean"]), clean16.append(r["own16_clean"])
        fault32.append(f32), fault16.append(f16)
        lines.append(f"| {r['model']} | {r['own32_clean']:.1e} (`{r['own32_clean_at']}`) | {f32:.1e} | {s32:.0f}x | "
                     f"{n32} of {len(faults)} | {r['own16_clean']:.1e} (`{r['own16_clean_at']}`) | {f16:.1e} | "
                     f"{s16:.0f}x | {n16} of {len(faults)} |")
    lines += ["", f"float32: clean own error at most {max(clean32):.1e} x RMS, planted faults at least {min(fault32):.1e}: "
              f"the tolerance (rtol {LAYER_RTOL:g}) is {LAYER_RTOL / max(clean32):.0f}x above the largest clean and "
              f"{min(fault32) / LAYER_RTOL:.0f}x below the weakest fault. float16: clean at most {max(clean16):.1e}, faults at "
              f"least {min(fault16):.1e}: rtol {rtol16:g} is {rtol16 / max(clean16):.1f}x above the largest clean and "
              f"{min(fault16) / rtol16:.1f}x below the weakest fault. Separation per model: float32 "
              f"{min(sep32):.0f}x to {max(sep32):.0f}x, float16 {min(sep16):.1f}x to {max(sep16):.0f}x.", ""]
    write_block(DOC, OWN_MARKER, "\n".join(lines))


if __name__ == "__main__":
    main()
