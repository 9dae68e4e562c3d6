"""How much an int8 file's classes depend on the CPU, the int8 format and ONNX Runtime's optimisation level.

Real EfficientNet-Lite0 weights, both exporters; the float32 export is quantized by
:func:`pytest_onnx_parity.onnxfile.quantize.to_int8` (static QDQ, per channel, calibrated on the 4
bundled photos) in three formats: U8S8 (uint8 activations, int8 weights), U8S8 with
``reduce_range=True`` (7-bit weights: ONNX Runtime's advice for x86-64 without VNNI) and
S8S8 (int8 activations). Each file runs at ONNX Runtime optimisation levels ``disabled``
and ``all`` on the 4 bundled photos (the photos it was calibrated on, as in
``tests/test_precision.py``) and on the 48 labelled views of ``benchmarks/int8_lite0.py``.
Reported: top-1 agreement with torch, the classes each photo gets, whether torch's
top-5 holds the int8 top-1 of each photo and by how much (the *top-5 margin* of a photo:
int8's best logit among torch's top-5 classes minus its best logit outside them; negative:
the int8 top-1 is outside torch's top-5), the largest int8 error
|int8 - torch| on a photo, and the CPU and its instruction-set flags, which decide the
kernels ONNX Runtime runs. The dynamo export is also quantized with a gross planted
fault (``blocks.1.0.conv_pwl`` weights x3 in the float32 file), as in
``tests/test_precision.py``. Writes the block ``int8-cpu`` of docs/precision.md.

    pip install "pytest-onnx-parity[real-weights]"; python benchmarks/int8_cpu.py
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from docblock import write_block

from pytest_onnx_parity import export_onnx, load_model, preprocess
from pytest_onnx_parity.runtime.environment import cpu_flags_text, cpu_info, int8_reduce_range
from pytest_onnx_parity.preprocessing.dataconfig import resolve_data_config
from pytest_onnx_parity.runtime.session import make_session
from pytest_onnx_parity.preprocessing.images import bundled_image_paths
from pytest_onnx_parity.runtime.forward import ort_forward, torch_forward
from pytest_onnx_parity.onnxfile.quantize import calibration_images, to_int8
from pytest_onnx_parity.testing.realweights import efficientnet_lite0_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from int8_lite0 import labelled_views  # the 48 labelled views

from pytest_onnx_parity.testing import scale_layer_weights

DOC = Path(__file__).resolve().parents[1] / "docs" / "precision.md"
MARKER = "int8-cpu"
FORMATS = (("U8S8", {"activations": "uint8", "reduce_range": False}),
           ("U8S8 reduce_range", {"activations": "uint8", "reduce_range": True}),
           ("S8S8", {"activations": "int8", "reduce_range": False}))
LEVELS = ("disabled", "all")
FAULT_LAYER, FAULT = "blocks.1.0.conv_pwl", 3.0


def top5_margins(e: np.ndarray, a: np.ndarray) -> list[float]:
    """Per photo: int8's best logit among torch's top-5 classes minus its best logit outside them."""
    top5 = np.argsort(-e, axis=1)[:, :5]
    return [float(a[i, top5[i]].max() - np.delete(a[i], top5[i]).max()) for i in range(len(e))]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="int8-cpu-"))
    model = load_model(f"tf_efficientnet_lite0={efficientnet_lite0_checkpoint(work / 'lite0.safetensors')}")
    views, _ = labelled_views()
    xv = preprocess(views, resolve_data_config(model))
    ev = torch_forward(model, xv)
    rows = []
    import onnx

    for exporter in ("torchscript", "dynamo"):
        exp = export_onnx(model, exporter=exporter, cache_dir=str(work / "cache"))
        x = calibration_images(exp.path)
        e = torch_forward(model, x)
        sources = [("", exp.path)]
        if exporter == "dynamo":
            faulty = work / "fault.onnx"
            onnx.save(scale_layer_weights(model, exp.path, FAULT_LAYER, FAULT), str(faulty))
            sources.append((f", `{FAULT_LAYER}` x{FAULT:g} planted", faulty))
        for fault, src in sources:
            for label, kw in FORMATS:
                q = to_int8(src, work / "q.onnx", x, mode="static", per_channel=True, **kw)
                for level in LEVELS:
                    s = make_session(q, ort_opt=level)
                    a, av = ort_forward(s, x), ort_forward(s, xv)
                    row = {"exporter": exporter, "format": label + fault, "level": level,
                           "agree": int((a.argmax(1) == e.argmax(1)).sum()), "n": len(x),
                           "classes": [int(c) for c in a.argmax(1)], "margin": top5_margins(e, a),
                           "err": float(np.abs(a - e).max()),
                           "views": float((av.argmax(1) == ev.argmax(1)).mean()), "n_views": len(xv)}
                    rows.append(row)
                    print(row, flush=True)
        top2 = np.sort(e, axis=1)[:, -2:]
        rows.append({"exporter": exporter, "format": "torch float32", "level": "-", "agree": None, "n": len(x),
                     "classes": [int(c) for c in e.argmax(1)], "margin": None, "err": None, "views": None,
                     "n_views": len(xv), "gaps": [float(g) for g in top2[:, 1] - top2[:, 0]]})
    write_doc(rows)


def write_doc(rows: list) -> None:
    import onnxruntime
    import torch

    info = cpu_info()
    names = ", ".join(p.stem for p in bundled_image_paths())
    gaps = ", ".join(f"{g:.2f}" for g in next(r["gaps"] for r in rows if "gaps" in r))
    head = (f"Measured by `benchmarks/int8_cpu.py` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
            f"**{info['model']}**, {info['machine']}; instruction-set flags: `{cpu_flags_text(info)}`; torch "
            f"{torch.__version__}, ONNX Runtime {onnxruntime.__version__} CPUExecutionProvider). Real EfficientNet-Lite0 "
            "weights, static QDQ per channel, calibrated on the 4 bundled photos; top-1 agreement with torch on those "
            f"4 photos ({names}) and on the 48 labelled views of `benchmarks/int8_lite0.py`. The package's own "
            f"choice on this CPU: reduce_range={int8_reduce_range(info)}. Torch's own margin between its top two "
            f"classes, per photo: {gaps} logits.")
    lines = [head, "",
             "| exporter | int8 format | ORT opt level | agreement, 4 photos | top-1 class per photo | top-5 margin per photo (logits) | max int8 error (logits) | agreement, 48 views |",
             "| --- | --- | --- | ---: | --- | ---: | ---: | ---: |"]
    for r in rows:
        agree = "-" if r["agree"] is None else f"{r['agree']}/{r['n']}"
        margin = "-" if r["margin"] is None else ", ".join(f"{m:.2f}" for m in r["margin"])
        err = "-" if r["err"] is None else f"{r['err']:.2f}"
        views = "-" if r["views"] is None else f"{r['views']:.1%}"
        lines.append(f"| {r['exporter']} | {r['format']} | {r['level']} | {agree} | {', '.join(map(str, r['classes']))} | "
                     f"{margin} | {err} | {views} |")
    lines += [""]
    block = "\n".join(lines)
    write_block(DOC, MARKER, block, title="# Deployment precisions\n")
    print(block)


if __name__ == "__main__":
    sys.exit(main())
