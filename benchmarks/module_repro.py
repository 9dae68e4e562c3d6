"""The divergent module as a standalone reproducer, measured on the planted faults of issue 20.

Two faults, each gated as ``NAME=random@FILE`` with ``--onnx-parity-artifacts`` (a pytest run of the
gate in a subprocess, this checkout first on the path):

* resnet18, TorchScript export, the weights of ``layer3.0.conv2`` scaled by 1.5
  (``pytest_onnx_parity.testing.scale_layer_weights``);
* vit_tiny_patch16_224, dynamo export, the ``epsilon`` attribute of ``blocks.2.norm1``'s
  LayerNormalization node set to 0.1 (torch's is 1e-6).

For each bundle: the module named, the nodes of ``module.onnx`` against the file's, the blame
verdict, and the exit code of ``python reproduce.py --module`` in an interpreter where torch, timm,
onnx and the plugin cannot be imported. Writes the ``module-repro`` block of docs/ci.md and
docs/example-ISSUE.md (the resnet18 bundle's ISSUE.md, its temporary paths written as ``FILE``).

    python benchmarks/module_repro.py [--no-write]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from docblock import write_block  # noqa: E402  (benchmarks/ is on sys.path: run as a script)

CASES = [("resnet18", "torchscript", "layer3.0.conv2 weights x1.5"),
         ("vit_tiny_patch16_224", "dynamo", "blocks.2.norm1 LayerNorm epsilon 1e-6 -> 0.1")]


def plant(name: str, exporter: str, folder: Path) -> Path:
    import onnx

    from pytest_onnx_parity import export_onnx, load_model
    from pytest_onnx_parity.testing import scale_layer_weights

    model = load_model(name)
    clean = export_onnx(model, exporter=exporter, cache_dir=folder / "cache").path
    if name == "resnet18":
        proto = scale_layer_weights(model, clean, "layer3.0.conv2", 1.5)
    else:
        proto = onnx.load(str(clean))
        node = next(n for n in proto.graph.node if n.op_type == "LayerNormalization"
                    and "blocks.2.norm1" in str(n.metadata_props))
        next(a for a in node.attribute if a.name == "epsilon").f = 0.1
    out = folder / f"{name}_faulty.onnx"
    onnx.save(proto, str(out))
    return out


def gate(name: str, file: Path, folder: Path) -> tuple[Path, float, int]:
    art = folder / "bundles"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "--onnx-parity",
                          f"--onnx-parity-models={name}=random@{file}", f"--onnx-parity-artifacts={art}",
                          f"--rootdir={folder}"], cwd=folder, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - t
    bundles = [p for p in art.iterdir() if p.is_dir() and p.name.startswith(name)] if art.is_dir() else []
    if len(bundles) != 1:
        raise SystemExit(f"{name}: the gate wrote no bundle (exit {run.returncode}):\n{run.stdout[-3000:]}{run.stderr[-2000:]}")
    return bundles[0], took, run.returncode


def clean_reproduce(bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """reproduce.py where only numpy and onnxruntime can be imported."""
    import numpy
    import onnxruntime

    paths = sorted({str(Path(numpy.__file__).parents[1]), str(Path(onnxruntime.__file__).parents[1])})
    blocked = ("torch", "timm", "onnx", "pytest_onnx_parity")
    boot = (f"import sys; sys.path[:0] = {paths!r}; sys.modules.update(dict.fromkeys({blocked!r})); "
            "sys.argv = ['reproduce.py', *sys.argv[1:]]; import runpy; runpy.run_path('reproduce.py', run_name='__main__')")
    return subprocess.run([sys.executable, "-I", "-S", "-c", boot, *args], cwd=bundle, capture_output=True, text=True,
                          check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-write", action="store_true", help="print, do not write the docs")
    args = ap.parse_args()
    rows = ["| model (exporter) | planted fault | module named | `module.onnx` nodes / file nodes | blame | "
            "`reproduce.py --module` exit | gate s |", "| --- | --- | --- | --- | --- | --- | --- |"]
    issue = console = ""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, exporter, fault in CASES:
            file = plant(name, exporter, folder)
            bundle, took, gate_rc = gate(name, file, folder)
            meta = json.loads((bundle / "bundle.json").read_text())
            mod = meta["module"] or {}
            run = clean_reproduce(bundle, "--module")
            share = 100.0 * mod["nodes"] / mod["file_nodes"]
            rows.append(f"| {name} ({exporter}) | {fault} | `{mod.get('module')}` ({mod.get('module_type')}) | "
                        f"{mod['nodes']} / {mod['file_nodes']} ({share:.1f}%) | {mod['blame']['verdict']} | "
                        f"{run.returncode} | {took:.1f} |")
            print(rows[-1], f"(gate exit {gate_rc})")
            print(run.stdout)
            if name == "resnet18":
                issue = (bundle / "ISSUE.md").read_text().replace(str(file), "FILE").replace(str(folder), "TMP")
                console = (f"$ cd bundles/{name}_random_... && python reproduce.py --module\n"
                           f"{run.stdout.replace(str(file), 'FILE').rstrip()}\n$ echo $?\n{run.returncode}")
    import onnxruntime
    import torch

    text = "\n".join(rows) + (f"\n\nMeasured with torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; "
                              "`gate s` is the wall time of the whole gate run (build, every check, the bundle). "
                              "The resnet18 bundle, its module run alone where torch, timm, onnx and the plugin "
                              "cannot be imported:\n\n```console\n" + console + "\n```")
    note = ("Written by `benchmarks/module_repro.py` from the bundle of resnet18 with the weights of "
            "`layer3.0.conv2` scaled by 1.5 in its TorchScript export, gated as `resnet18=random@FILE`. "
            "The weights check also fails on this file (the planted weight is a weight); the module's blame is "
            "about the graph. The file as the bundle holds it:\n\n")
    if args.no_write:
        print(text)
        print(issue)
        return
    write_block(ROOT / "docs" / "ci.md", "module-repro", text)
    write_block(ROOT / "docs" / "example-ISSUE.md", "example-issue", note + "````markdown\n" + issue.rstrip("\n") + "\n````",
                title="# Example ISSUE.md (a reproducer bundle's bug report)")


if __name__ == "__main__":
    main()
