"""Peak memory of the real-images check against the size of the folder (``images=FOLDER``).

The real-images pipeline streams a folder: it decodes, preprocesses and runs one batch at a time and
keeps only running sums, so its peak memory should not grow with the number of images. This script
builds labelled ImageFolder trees (class-index sub-folders ``0`` .. ``9``) of copies of the four bundled
photos, downscaled so that decoding stays cheap, then runs one gate item per folder, each in a fresh
Python process, and reads the process's peak RSS (``ru_maxrss``) there. The export is made once,
in a first process, into a shared cache, so every measured run loads the same cached file.

    PYTHONPATH=. python benchmarks/bench_photo_memory.py [--small 50] [--large 5000] [--int8-large 1000]

float32: ``check_parity("test_resnet", images=FOLDER, layers="never", exporter="torchscript")``.
int8 (``--int8-large 0`` skips it): ``precision="int8"`` needs real weights, so it runs the EfficientNet-Lite0
ImageNet weights (``pytest_onnx_parity.testing.realweights``), on the small folder and ``--int8-large``
images. Writes the table into the ``photo-memory`` block of docs/performance.md, under the heading
"Real images: memory with the folder's size". Goal: the large folder's peak within 1.2x the small one's.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from docblock import write_block

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
PHOTOS = sorted((ROOT / "pytest_onnx_parity" / "data" / "images").glob("*.jpg"))
CLASSES = 10
GOAL = 1.2


def machine() -> str:
    """The CPU's model name and its bf16 instructions (OpenVINO's default precision depends on them), read by the
    package's own probe (pytest_onnx_parity.runtime.environment)."""
    from pytest_onnx_parity.runtime.environment import cpu_info

    info = cpu_info()
    extra = [f for f in ("avx512_bf16", "amx_bf16") if f in set(info.get("flags") or ())]
    return f"{info.get('model') or platform.machine()} ({', '.join(extra) if extra else 'no avx512_bf16/AMX'})"


def build_folder(dest: Path, count: int, side: int) -> Path:
    """``count`` JPEGs (the bundled photos, longest side ``side``) in class-index sub-folders 0..9."""
    from PIL import Image

    small = []
    for photo in PHOTOS:
        with Image.open(photo) as img:
            img = img.convert("RGB")
            img.thumbnail((side, side))
            small.append(img.copy())
    cache = dest.parent / f"{dest.name}-src"
    cache.mkdir(parents=True, exist_ok=True)
    sources = []
    for i, img in enumerate(small):
        path = cache / f"photo{i}.jpg"
        img.save(path, quality=90)
        sources.append(path)
    for c in range(CLASSES):
        (dest / str(c)).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        shutil.copyfile(sources[i % len(sources)], dest / str(i % CLASSES) / f"img{i:05d}.jpg")
    return dest


def run_child(model: str, folder: Path | None, cache: Path, extra: dict) -> dict:
    """One ``check_parity`` in a fresh process; its status, wall time and peak RSS (MB)."""
    code = (
        "import json, resource, sys, time\n"
        "t = time.perf_counter()\n"
        "import pytest_onnx_parity as p\n"
        f"r = p.check_parity({model!r}, images={str(folder) if folder else None!r}, layers='never', "
        f"exporter='torchscript', cache_dir={str(cache)!r}, **{extra!r})\n"
        "s = time.perf_counter() - t\n"
        "rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "real = r.check('real_images')\n"
        "print('RESULT ' + json.dumps({'status': r.status, 'seconds': s, 'rss_mb': rss, 'cache_hit': r.cache_hit,\n"
        "    'real_images': (real.status if real else None), 'real_s': r.timings.get('real_images_s'),\n"
        "    'error': (r.error or (real.message if real and real.status != 'passed' else None))}))\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{model}: no result\n{done.stderr[-2000:]}")
    found = json.loads(line[len("RESULT "):])
    print(model, folder.name if folder else "-", extra, found, flush=True)
    return found


def status(row: dict) -> str:
    """The item's status, with the first clause of its reason when it did not pass."""
    if row["status"] == "passed" or not row.get("error"):
        return row["status"]
    return f"{row['status']}: {row['error'].split(':')[0].split('(')[0].strip()}"


def table(rows: list[dict], side: int, load: tuple[float, float]) -> str:
    lines = [
        (f"Peak RSS of one gate item (`check_parity(..., images=FOLDER, layers=\"never\", exporter=\"torchscript\")`) "
        f"in a fresh Python process, per folder size; the folders are copies of the four bundled photos "
        f"(longest side {side} px) in class-index sub-folders `0` to `{CLASSES - 1}`; the first run of each model "
        f"fills a shared cache. {platform.machine()}, {machine()}, {os.cpu_count()} CPU cores, load average {load[0]:.1f} when the "
        f"run began and {load[1]:.1f} when it ended, Python {platform.python_version()}. Seconds are the whole "
        f"process's (imports, model, cached file, every check); images/s divides the folder by them. "
        f"The class folders are arbitrary labels (the photos are not of ImageNet classes 0 to 9), so the "
        f"accuracy figures of these runs mean nothing; the memory and the status of the agreement checks do. "
        f"Measured by `benchmarks/bench_photo_memory.py`."), "",
        "| model | precision | file | images | peak RSS MB | ratio to the small folder | seconds | images/s | status |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    base: dict[tuple[str, str, bool], tuple[int, float]] = {}
    verdicts = []
    for r in rows:
        key = (r["label"], r["precision"], r["cache_hit"])
        base.setdefault(key, (r["images"], r["rss_mb"]))
        ratio = r["rss_mb"] / base[key][1]
        if r["images"] != base[key][0]:
            verdicts.append((key, r["images"], ratio))
        made = "cached" if r["cache_hit"] else ("quantized in this run" if r["precision"] == "int8" else "exported in this run")
        lines.append(f"| {r['label']} | {r['precision']} | {made} | {r['images']} | {r['rss_mb']:.0f} | {ratio:.2f}x | "
                     f"{r['seconds']:.1f} | {r['images'] / r['seconds']:.1f} | {status(r)} |")
    lines.append("")
    met = [v for v in verdicts if v[2] <= GOAL]
    lines.append(
        f"Goal: the large folder's peak within {GOAL}x the small one's. "
        + "; ".join(f"{k[1]} ({'cached file' if k[2] else 'file made in the run'}) at {n} images: {ratio:.2f}x "
                    f"({'met' if ratio <= GOAL else 'not met'})" for k, n, ratio in verdicts)
        + f". {len(met)} of {len(verdicts)} met. Each ratio compares runs in the same state (cached file, or file "
        "made in the run). An int8 file is calibrated on the folder's images, so a new folder makes a new int8 file "
        "(its first run in a folder quantizes); the float32 export does not depend on the folder.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=50)
    parser.add_argument("--large", type=int, default=5000)
    parser.add_argument("--int8-large", type=int, default=1000, help="int8 large folder size; 0 skips int8")
    parser.add_argument("--side", type=int, default=320, help="longest side of the copied photos, px")
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--doc", type=Path, default=DOC, help="the document to write (default docs/performance.md)")
    args = parser.parse_args()
    load0 = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        cache = tmp_path / "cache"
        sizes = sorted({args.small, args.large, *([args.int8_large] if args.int8_large else [])})
        folders = {n: build_folder(tmp_path / f"images-{n}", n, args.side) for n in sizes}
        plans = [("test_resnet", "test_resnet (random weights)", {}, [args.small, args.large])]
        if args.int8_large:
            from pytest_onnx_parity.testing.realweights import efficientnet_lite0_checkpoint

            ckpt = efficientnet_lite0_checkpoint(tmp_path / "lite0.safetensors")
            plans.append((f"tf_efficientnet_lite0={ckpt}", "tf_efficientnet_lite0 (ImageNet weights)",
                          {"precision": "int8"}, [args.small, args.int8_large]))
        for model, label, extra, counts in plans:
            for n in [counts[0], *counts]:  # the first run fills the cache (export, int8 quantisation)
                found = run_child(model, folders[n], cache, extra)
                rows.append({"model": model, "label": label, "precision": extra.get("precision", "fp32"),
                             "images": n, **found})
    text = table(rows, args.side, (load0, os.getloadavg()[0]))
    print(text)
    if not args.no_doc:
        write_block(args.doc, "photo-memory", text, heading="## Real images: memory with the folder's size")


if __name__ == "__main__":
    main()
