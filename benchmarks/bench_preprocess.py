"""Time of the torch-free ``preprocess`` against timm's eval transform, per image.

On the bundled photos, for one data config (the ViT-S config of the seed failure,
224x224 bicubic, crop_pct 0.9): decoding the file (``open_image``), ``preprocess``
on the decoded image, and timm's transform (``create_transform(**config)``) with
one torch thread on the same image. Medians over repeats, after one warm-up call.
Writes the ``preprocess-speed`` block of docs/preprocessing.md (benchmarks/docblock.py).

    python benchmarks/bench_preprocess.py [--repeat 20] [--no-write]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from docblock import write_block

DOC = Path(__file__).resolve().parents[1] / "docs" / "preprocessing.md"
CONFIG: dict[str, Any] = {"input_size": (3, 224, 224), "interpolation": "bicubic", "mean": (0.5, 0.5, 0.5),
                          "std": (0.5, 0.5, 0.5), "crop_pct": 0.9, "crop_mode": "center"}


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def measure(repeat: int) -> list[dict[str, Any]]:
    import torch
    from timm.data import create_transform

    from pytest_onnx_parity.preprocessing.images import bundled_image_paths
    from pytest_onnx_parity.preprocessing.decode import open_image
    from pytest_onnx_parity.preprocessing.transform import preprocess

    torch.set_num_threads(1)
    tf = create_transform(**CONFIG)
    rows = []
    for path in bundled_image_paths():
        image = open_image(path)
        rows.append({"image": Path(path).name, "size": image.size,
                     "decode_ms": median_ms(lambda: open_image(path), repeat),
                     "preprocess_ms": median_ms(lambda: preprocess(image, CONFIG), repeat),
                     "timm_ms": median_ms(lambda: tf(image), repeat)})
        print(rows[-1], flush=True)
    return rows


def markdown(rows: list[dict[str, Any]], repeat: int) -> str:
    import torch

    lines = [f"Measured by `python benchmarks/bench_preprocess.py` on {os.cpu_count()} CPU cores "
             f"({platform.machine()}), Python {platform.python_version()}, torch {torch.__version__} (one thread "
             f"for timm's transform), load average {os.getloadavg()[0]:.1f}; the bundled photos, config "
             f"{CONFIG['input_size'][1]}x{CONFIG['input_size'][2]} {CONFIG['interpolation']}, crop_pct "
             f"{CONFIG['crop_pct']:g}; median of {repeat} calls per image, in milliseconds:", "",
             "| photo | size | decode | `preprocess` | timm's transform |", "| --- | --- | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['image']} | {r['size'][0]}x{r['size'][1]} | {r['decode_ms']:.1f} | "
                     f"{r['preprocess_ms']:.1f} | {r['timm_ms']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--no-write", action="store_true", help="Print only; leave docs/ alone")
    args = ap.parse_args(argv)
    text = markdown(measure(args.repeat), args.repeat)
    print(text)
    if not args.no_write:
        write_block(DOC, "preprocess-speed", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
