"""Coverage and cost of the weights check (pytest_onnx_parity.checks.weightmatch) per architecture and exporter.

For each model and each way of exporting it (the plugin's dynamo and TorchScript
exports, timm's ``onnx_export``, a plain ``torch.onnx.export(..., dynamo=False)``):
export once (timed), run ``compare_weights`` against the same model (timed; it must
pass) and against the same architecture built with another seed (it must fail).
The table goes into docs/weights-check.md between the ``weights-coverage`` markers.

    PYTHONPATH=$PWD python3 benchmarks/weights_coverage.py            # the coverage set
    PYTHONPATH=$PWD python3 benchmarks/weights_coverage.py --timing   # adds resnet50 and vit_base
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

COVERAGE_MODELS = ["resnet18", "efficientnet_b0", "vit_tiny_patch16_224", "convnext_atto"]
TIMING_MODELS = ["resnet50", "vit_base_patch16_224"]
WAYS = ["dynamo", "torchscript", "timm", "plain"]
DOC = Path(__file__).resolve().parents[1] / "docs" / "weights-check.md"
MARK = "weights-coverage"


def export(model: Any, way: str, path: Path) -> float:
    import torch

    import pytest_onnx_parity as P

    size = tuple(model.pretrained_cfg["input_size"])
    t = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if way in ("dynamo", "torchscript"):
            P.export_onnx(model, path, exporter=way, use_cache=False)
        elif way == "timm":
            from timm.utils.onnx import onnx_export

            onnx_export(model, str(path), input_size=size, batch_size=1, check=False)
        else:
            torch.onnx.export(model, torch.randn(1, *size), str(path), dynamo=False)
    model.eval()
    return time.perf_counter() - t


def measure(name: str, ways: list[str], folder: Path) -> list[dict[str, Any]]:
    import pytest_onnx_parity as P
    from pytest_onnx_parity.checks.weightmatch import compare_weights

    model, other = P.load_model(name), P.load_model(name, seed=1)
    rows = []
    for way in ways:
        path = folder / f"{name}-{way}.onnx"
        try:
            export_s = export(model, way, path)
        except Exception as exc:  # an exporter's limitation is a row, not a crash
            rows.append({"model": name, "way": way, "error": f"{type(exc).__name__}: {str(exc)[:80]}"})
            continue
        t = time.perf_counter()
        same = compare_weights(model, path)
        check_s = time.perf_counter() - t
        seeded = compare_weights(other, path)
        rows.append({"model": name, "way": way, "status": same.status, "other_seed": seeded.status,
                     "compared": same.compared, "total": same.total, "unlocated": len(same.unlocated),
                     "coverage": same.coverage, "export_s": export_s, "check_s": check_s,
                     "params_m": sum(p.numel() for p in model.parameters()) / 1e6})
        for f in folder.glob(f"{name}-{way}.onnx*"):
            f.unlink()
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    import torch

    lines = [f"Measured by `benchmarks/weights_coverage.py` on {platform.machine()}, {os.cpu_count()} CPUs, "
             f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}. Coverage: fraction of weight elements "
             "(parameters and BatchNorm statistics) equal to a file tensor in some form.", "",
             "| model | params | export | same model | coverage | compared / total | not found | other seed | export s | check s | check / export |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | | {r['way']} | export failed: {r['error']} | | | | | | | |")
            continue
        lines.append(
            f"| {r['model']} | {r['params_m']:.1f}M | {r['way']} | {r['status']} | {100 * r['coverage']:.1f}% | "
            f"{r['compared']} / {r['total']} | {r['unlocated']} | {r['other_seed']} | {r['export_s']:.1f} | "
            f"{r['check_s']:.2f} | {r['check_s'] / r['export_s']:.0%} |")
    return "\n".join(lines)


def write_block(text: str) -> None:
    doc = DOC.read_text()
    pattern = re.compile(rf"(<!-- begin: {MARK} -->\n).*?(<!-- end: {MARK} -->)", re.S)
    if not pattern.search(doc):
        raise SystemExit(f"{DOC} lacks the {MARK} markers")
    DOC.write_text(pattern.sub(lambda m: m.group(1) + text + "\n" + m.group(2), doc))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timing", action="store_true", help="Also measure resnet50 and vit_base_patch16_224")
    ap.add_argument("--models", nargs="*", help="Models instead of the coverage set")
    ap.add_argument("--no-write", action="store_true", help="Print the table without writing the doc")
    args = ap.parse_args()
    names = args.models or COVERAGE_MODELS
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows += measure(name, WAYS, Path(tmp))
            print(table(rows).splitlines()[-1], flush=True)
        if args.timing:
            for name in TIMING_MODELS:
                rows += measure(name, ["torchscript", "dynamo"], Path(tmp))
                print(table(rows).splitlines()[-1], flush=True)
    text = table(rows)
    print(text)
    if not args.no_write:
        write_block(text)


if __name__ == "__main__":
    main()
