"""The preprocessing graph (ONNX Runtime, warm) against Pillow's resize+crop+normalise (``preprocess``).

Also measures exactness over every distinct pretrained data config of timm on the bundled photos:
the largest normalised difference and the number of uint8 pixels that differ before normalisation.
Writes its figures into the ``bench-pregraph`` block of docs/embedded-preprocessing.md.

    PYTHONPATH=. python benchmarks/bench_pregraph.py [--repeat 30]
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
from docblock import write_block

from pytest_onnx_parity.testing import strategies
from pytest_onnx_parity.preprocessing.images import bundled_image_paths
from pytest_onnx_parity.onnxfile.pregraph import preprocessing_graph
from pytest_onnx_parity.preprocessing.decode import open_image
from pytest_onnx_parity.preprocessing.transform import EvalTransform, preprocess

DOC = Path(__file__).resolve().parent.parent / "docs" / "embedded-preprocessing.md"
CONFIGS = {
    "vit (bicubic, crop 0.9, 224)": {"input_size": (3, 224, 224), "interpolation": "bicubic", "mean": (0.5,) * 3,
                                     "std": (0.5,) * 3, "crop_pct": 0.9, "crop_mode": "center"},
    "resnet (bilinear, crop 0.875, 224)": {"input_size": (3, 224, 224), "interpolation": "bilinear",
                                           "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
                                           "crop_pct": 0.875, "crop_mode": "center"},
}


def session(model):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()  # what a deployment gets by default, on one thread (Pillow uses one)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def ort_version() -> str:
    import onnxruntime as ort

    return ort.__version__


def best_of(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    photos = [np.asarray(open_image(p)) for p in bundled_image_paths()]
    # a multi-megapixel image: the largest photo enlarged to 4000 pixels wide (Pillow, bicubic)
    from PIL import Image

    biggest = max(photos, key=lambda a: a.size)
    height = round(biggest.shape[0] * 4000 / biggest.shape[1])
    large = np.asarray(Image.fromarray(biggest).resize((4000, height), Image.Resampling.BICUBIC))
    load_before = os.getloadavg()[0]
    rows = []
    for label, cfg in CONFIGS.items():
        sess = session(preprocessing_graph(cfg))
        for images, what in ((photos, "photos"), ([large], f"{large.shape[1]}x{large.shape[0]}")):
            repeat = args.repeat if images is photos else max(3, args.repeat // 5)
            graph_s = best_of(lambda s=sess, im=images: [s.run(None, {"pixels": a[None]}) for a in im], repeat)
            pillow_s = best_of(lambda im=images, cf=cfg: preprocess(im, cf), repeat)
            rows.append(f"| {label} | {what} | {pillow_s / len(images) * 1e3:.2f} ms | "
                        f"{graph_s / len(images) * 1e3:.2f} ms | {graph_s / pillow_s:.2f}x |")
    load_after = os.getloadavg()[0]
    worst, mismatched, total, n_cfg = 0.0, 0, 0, 0
    seen = set()
    for cfg in strategies._distinct_pretrained():
        n_cfg += 1
        got = np.concatenate([session(preprocessing_graph(cfg)).run(None, {"pixels": a[None]})[0] for a in photos])
        worst = max(worst, float(np.abs(got - preprocess(photos, cfg)).max()))
        key = (tuple(cfg["input_size"]), cfg["interpolation"], cfg["crop_pct"], cfg["crop_mode"])
        if key in seen:
            continue
        seen.add(key)
        raw = dict(cfg, mean=(0, 0, 0), std=(1, 1, 1))
        pixels = np.rint(np.concatenate([session(preprocessing_graph(raw)).run(None, {"pixels": a[None]})[0]
                                         for a in photos]) * 255).astype(np.uint8)
        transform = EvalTransform.from_config(raw)
        expected = np.stack([transform.pixels(Image.fromarray(a)).transpose(2, 0, 1) for a in photos])
        mismatched += int((pixels != expected).sum())
        total += expected.size
    block = "\n".join([
        (f"Measured by `benchmarks/bench_pregraph.py` on {platform.processor() or platform.machine()}, "
         f"{os.cpu_count()} CPUs (a shared machine: load average {load_before:.1f} before, {load_after:.1f} after), "
         f"ONNX Runtime {ort_version()} with its default graph optimisation on one thread, best of {args.repeat} "
         f"per image over the {len(photos)} bundled photos (288x288 to 640x427) fed one by one, and best of "
         f"{max(3, args.repeat // 5)} on the largest photo enlarged:"),
        "",
        "| config | images | Pillow `preprocess` | preprocessing graph | graph / Pillow |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
        (f"Exactness over all {n_cfg} distinct pretrained data configs of timm on the bundled photos: "
         f"largest normalised difference **{worst:.3g}**; uint8 pixels before normalisation that differ: "
         f"**{mismatched} of {total}** ({len(seen)} distinct geometries)."),
    ])
    write_block(DOC, "bench-pregraph", block)
    print(block)


if __name__ == "__main__":
    main()
