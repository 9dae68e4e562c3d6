"""Reproducer bundles: everything needed to rerun a failing model's check elsewhere.

``--onnx-parity-artifacts DIR`` makes the gate call :func:`write_bundle` for each
failing model. ``DIR/<model>/`` then holds:

``model.onnx``       the exported file (and its external data files, if any)
``inputs.npz``       ``input``: the random batch the gate used (float32 NCHW)
``outputs.npz``      ``torch`` and ``onnx``: the logits of both sides on that batch
``layers.txt``       the per-layer table, or why there is none
``result.json``      the gate's result for the model (one entry of the JSON report)
``bundle.json``      what the bundle holds: model, tolerances, versions, problems
``weights.pt``       the torch state dict (when below 256 MB), for ``reproduce.py --torch``
``reproduce.py``     reruns ONNX Runtime on the inputs and compares with the stored
                     torch logits; needs only numpy and onnxruntime (plus torch and
                     timm for ``--torch``); exits 1 on a mismatch, 0 otherwise
``README.txt``       how to use it

A problem in making one part (ONNX Runtime cannot load the file, the model cannot
run again, ...) is written into ``bundle.json`` and ``README.txt`` instead of
raising; only a folder that cannot be written raises ``OSError``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

WEIGHTS_LIMIT = 256 * 2**20  # bytes of state dict written as weights.pt
ONNX_NAME = "model.onnx"


def safe_name(text: str, limit: int = 120) -> str:
    """A folder name for a model spec: letters, digits, ``_.-``; never ``.``/``..`` or empty."""
    s = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("._")
    return s[:limit] or "model"


def write_bundle(run_state: Any, directory: "str | os.PathLike[str]") -> Path:
    """Write the reproducer bundle of one failing gate run into ``directory/<model>/``; return that folder.

    ``run_state`` is a :class:`pytest_onnx_parity.parity.ParityRun` after
    ``run_checks`` (``.model``, ``.export``, ``._inputs``, ``.result``). The folder
    is written in a temporary place and renamed into position, replacing an older
    bundle of the same model.
    """
    result = getattr(run_state, "result", None)
    label = str(getattr(result, "model", None) or "model")
    root = Path(directory)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{safe_name(label)}-", dir=root))
    except OSError as exc:
        raise OSError(f"onnx-parity: cannot write the reproducer bundle of {label} into {root}: {exc}") from exc
    target = root / safe_name(label)
    try:
        _fill(run_state, label, tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(f"onnx-parity: cannot write the reproducer bundle of {label} into {target}: {exc}") from exc
    return target


def _fill(run_state: Any, label: str, out: Path) -> None:
    import numpy as np

    problems: list[str] = []
    files: list[str] = []

    def attempt(what: str, fn: Any) -> Any:
        try:
            return fn()
        except OSError:
            raise
        except Exception as exc:  # recorded, never raised into the gate
            problems.append(f"{what}: {type(exc).__name__}: {' '.join(str(exc).split())[:500]}")
            return None

    result = getattr(run_state, "result", None)
    model = getattr(run_state, "model", None)
    export = getattr(run_state, "export", None)
    options = getattr(run_state, "options", None)

    # the ONNX file, with its external data
    onnx_src = Path(export.path) if export is not None and getattr(export, "path", None) else None
    onnx_file = None
    if onnx_src is None or not onnx_src.is_file():
        problems.append(f"ONNX file: not available ({onnx_src or 'the model was not exported'})")
    else:
        extra = attempt("external data of the ONNX file", lambda: _external_files(onnx_src)) or []
        for data in extra:
            if data.is_file():
                shutil.copyfile(data, out / data.name)
                files.append(data.name)
            else:
                problems.append(f"external data file missing: {data}")
        shutil.copyfile(onnx_src, out / ONNX_NAME)
        onnx_file = out / ONNX_NAME
        files.append(ONNX_NAME)

    # the inputs
    x = getattr(run_state, "_inputs", None)
    if x is None and model is not None:
        x = attempt("inputs (rebuilt: the gate did not reach the random batch)", lambda: _rebuild_inputs(model, options))
    if x is not None:
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        np.savez(out / "inputs.npz", input=x)
        files.append("inputs.npz")
    else:
        problems.append("inputs: none (the gate did not reach the random batch)")

    # both outputs
    outputs: dict[str, Any] = {}
    input_name = None
    if x is not None and model is not None:
        t = attempt("torch logits", lambda: _torch_logits(model, x))
        if t is not None:
            outputs["torch"] = t
    if x is not None and onnx_file is not None:
        got = attempt("ONNX Runtime logits", lambda: _onnx_logits(onnx_file, x))
        if got is not None:
            input_name, outputs["onnx"] = got
    if outputs:
        np.savez(out / "outputs.npz", **outputs)
        files.append("outputs.npz")

    # the per-layer table
    cmp = getattr(result, "layer_comparison", None)
    if cmp is not None and hasattr(cmp, "table"):
        table = attempt("per-layer table", cmp.table)
        text = table if isinstance(table, str) else "The per-layer table could not be drawn (see bundle.json).\n"
        summary = attempt("per-layer summary", cmp.summary) if hasattr(cmp, "summary") else None
        if isinstance(summary, str):
            text = summary + "\n\n" + text
    else:
        check = result.check("layers") if result is not None and hasattr(result, "check") else None
        why = f" ({check.message})" if check is not None and check.message else ""
        text = (f"No per-layer comparison was run for this model{why}.\n"
                "Run the gate with --onnx-parity-layers always (or on-failure) to get the table here.\n")
    (out / "layers.txt").write_text(text if text.endswith("\n") else text + "\n")
    files.append("layers.txt")

    # the gate's result
    rdict = attempt("result.json", result.to_dict) if result is not None else None
    if rdict is not None:
        (out / "result.json").write_text(json.dumps(rdict, indent=2) + "\n")
        files.append("result.json")

    # weights for rebuilding the torch side
    spec = getattr(model, "onnx_parity_spec", None) if model is not None else None
    arch = str(getattr(spec, "name", None) or label.split("=")[0])
    weights_kind = str(getattr(spec, "weights_kind", None) or getattr(result, "weights", "") or "")
    if model is not None:
        saved = attempt("weights.pt", lambda: _save_weights(model, out / "weights.pt"))
        if saved:
            files.append("weights.pt")
        elif saved is False:
            problems.append(f"weights.pt: not written, the state dict exceeds {WEIGHTS_LIMIT >> 20} MB "
                            "(the ONNX file holds the same weights)")

    atol, rtol, tol_source = _tolerances(result, options, outputs.get("torch"))
    failing = [f"{c.name} ({c.status})" for c in getattr(result, "checks", []) if c.status in ("failed", "error")]
    meta = {
        "model": label, "architecture": arch, "weights": weights_kind or None,
        "seed": getattr(options, "seed", None), "exporter": getattr(result, "exporter", None),
        "opset": getattr(result, "opset", None), "status": getattr(result, "status", None),
        "failing_checks": failing, "atol": atol, "rtol": rtol, "tolerance": tol_source,
        "input_name": input_name, "onnx_file": ONNX_NAME if onnx_file else None,
        "files": sorted(files + ["bundle.json", "reproduce.py", "README.txt"]),
        "versions": _versions(), "problems": problems,
    }
    (out / "bundle.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    (out / "reproduce.py").write_text(REPRODUCE_PY)
    (out / "README.txt").write_text(_readme(meta))


def _external_files(path: Path) -> list[Path]:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    names = set()
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            names.update(kv.value for kv in t.external_data if kv.key == "location")
    return [path.parent / n for n in sorted(names)]


def _rebuild_inputs(model: Any, options: Any) -> Any:
    from .dataconfig import resolve_data_config
    from .parity import random_batch

    return random_batch(resolve_data_config(model), int(getattr(options, "batch_size", 4)), int(getattr(options, "seed", 0)))


def _torch_logits(model: Any, x: Any) -> Any:
    from .parity import torch_forward

    return torch_forward(model, x)


def _onnx_logits(path: Path, x: Any) -> tuple[str, Any]:
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return name, np.asarray(sess.run(None, {name: x})[0])


def _save_weights(model: Any, path: Path) -> bool:
    import torch

    sd = model.state_dict()
    size = sum(t.numel() * t.element_size() for t in sd.values() if hasattr(t, "numel"))
    if size > WEIGHTS_LIMIT:
        return False
    torch.save(sd, str(path))
    return True


def _tolerances(result: Any, options: Any, torch_logits: Any) -> tuple[float | None, float | None, str]:
    check = result.check("logits") if result is not None and hasattr(result, "check") else None
    details = getattr(check, "details", None) or {}
    if details.get("atol") is not None and details.get("rtol") is not None:
        return float(details["atol"]), float(details["rtol"]), "as used by the gate's logits check"
    if torch_logits is not None:
        try:
            from .compare import resolve_tolerance

            atol, rtol, how = resolve_tolerance(torch_logits, getattr(options, "atol", None), getattr(options, "rtol", None))
            return atol, rtol, how
        except Exception:  # noqa: BLE001 - a tolerance the script can fall back from
            pass
    return None, None, "reproduce.py's default: 1e-4 x logit RMS, rtol 1e-4"


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("torch", "timm", "onnx", "onnxruntime", "onnxscript", "numpy", "pytest-onnx-parity"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "missing"
    return out


def _readme(meta: dict[str, Any]) -> str:
    lines = [
        f"Reproducer bundle of {meta['model']} (pytest-onnx-parity)",
        "",
        f"The gate found: {', '.join(meta['failing_checks']) or meta['status']}.",
        "",
        "Rerun the logits comparison (needs numpy and onnxruntime only):",
        "    python reproduce.py",
        "Also rebuild the torch side from weights.pt (needs torch and timm):",
        "    python reproduce.py --torch",
        "Exit code 1: ONNX Runtime disagrees with torch beyond the tolerance; 0: they agree.",
        "",
        "Files: " + ", ".join(meta["files"]),
        f"Made with: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}",
    ]
    if meta["problems"]:
        lines += ["", "Parts that could not be made:"] + [f"  - {p}" for p in meta["problems"]]
    return "\n".join(lines) + "\n"


REPRODUCE_PY = r'''#!/usr/bin/env python3
"""Reproduce an ONNX parity mismatch found by pytest-onnx-parity.

    python reproduce.py           # ONNX Runtime on inputs.npz vs the stored torch logits
    python reproduce.py --torch   # also rebuild the torch model (needs torch and timm)

Needs numpy and onnxruntime only (torch and timm for --torch); the plugin itself
is not needed. Exit code 1 when the outputs mismatch, 0 when they agree, 2 when
the bundle cannot be used.
"""
import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def load_meta():
    with open(os.path.join(HERE, "bundle.json")) as fh:
        return json.load(fh)


def compare(expected, actual, atol, rtol):
    """Element-wise |actual - expected| <= atol + rtol * |expected|, and top-1 agreement."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape:
        return {"problem": "shapes differ: torch %s, ONNX %s" % (e.shape, a.shape), "mismatched": int(e.size),
                "total": int(e.size)}
    if atol is None or rtol is None:
        finite = e[np.isfinite(e)]
        atol = 1e-4 * float(np.sqrt(np.mean(finite ** 2))) if finite.size else 0.0
        rtol = 1e-4
    diff = np.abs(a - e)
    bad = ~np.isfinite(a) & np.isfinite(e)
    diff[~np.isfinite(e) & ~np.isfinite(a)] = 0.0
    diff[bad] = np.inf
    allowed = atol + rtol * np.abs(e)
    over = diff > allowed
    out = {"max_abs_diff": float(np.max(diff)) if diff.size else 0.0, "mismatched": int(over.sum()),
           "total": int(e.size), "atol": float(atol), "rtol": float(rtol)}
    if e.ndim == 2 and e.shape[0]:
        top_e, top_a = e.argmax(axis=1), a.argmax(axis=1)
        out["top1_agree"] = int((top_e == top_a).sum())
        out["batch"] = int(e.shape[0])
        out["rows"] = [(int(i), int(top_e[i]), int(top_a[i])) for i in range(e.shape[0]) if top_e[i] != top_a[i]][:8]
    if over.any():
        idx = np.unravel_index(int(np.argmax(np.where(over, diff - allowed, -np.inf))), e.shape)
        out["worst"] = {"index": tuple(int(i) for i in idx), "torch": float(e[idx]), "onnx": float(a[idx]),
                        "allowed": float(allowed[idx])}
    return out


def report(title, r):
    print(title)
    if "problem" in r:
        print("  " + r["problem"])
        return True
    pct = 100.0 * r["mismatched"] / max(r["total"], 1)
    print("  max abs diff:    %.4g  (atol %.3g, rtol %.3g)" % (r["max_abs_diff"], r["atol"], r["rtol"]))
    print("  mismatched:      %d / %d (%.1f%%)" % (r["mismatched"], r["total"], pct))
    if "worst" in r:
        w = r["worst"]
        print("  worst element:   index %s: torch %.6g, onnx %.6g (up to %.3g allowed)"
              % (w["index"], w["torch"], w["onnx"], w["allowed"]))
    if "top1_agree" in r:
        print("  top-1 agreement: %d / %d (%.1f%%)" % (r["top1_agree"], r["batch"], 100.0 * r["top1_agree"] / r["batch"]))
        for i, t, o in r["rows"]:
            print("    sample %d: torch says class %d, ONNX says class %d" % (i, t, o))
    return r["mismatched"] > 0


def run_onnx(path, x):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0], ort.__version__


def run_torch(meta, x):
    import timm
    import torch

    model = timm.create_model(meta["architecture"], pretrained=False)
    weights = os.path.join(HERE, "weights.pt")
    if os.path.isfile(weights):
        model.load_state_dict(torch.load(weights, map_location="cpu"))
    elif meta.get("weights") == "pretrained":
        model = timm.create_model(meta["architecture"], pretrained=True)
    else:
        raise SystemExit("no weights.pt in the bundle: cannot rebuild the torch model with the same weights")
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    return (out[0] if isinstance(out, (tuple, list)) else out).float().numpy()


def main(argv=None):
    p = argparse.ArgumentParser(description="Reproduce the ONNX parity mismatch of this bundle")
    p.add_argument("--torch", action="store_true", help="also rebuild the torch side with timm from weights.pt")
    p.add_argument("--atol", type=float, help="absolute tolerance (default: the gate's)")
    p.add_argument("--rtol", type=float, help="relative tolerance (default: the gate's)")
    args = p.parse_args(argv)
    try:
        meta = load_meta()
        x = np.load(os.path.join(HERE, "inputs.npz"))["input"]
        outputs = np.load(os.path.join(HERE, "outputs.npz"))
        expected = outputs["torch"]
    except (OSError, KeyError, ValueError) as exc:
        print("this bundle is incomplete: %s (see README.txt)" % exc)
        return 2
    onnx_path = os.path.join(HERE, meta.get("onnx_file") or "model.onnx")
    if not os.path.isfile(onnx_path):
        print("this bundle has no ONNX file (see README.txt)")
        return 2
    atol = args.atol if args.atol is not None else meta.get("atol")
    rtol = args.rtol if args.rtol is not None else meta.get("rtol")
    print("model:   %s (exporter %s, opset %s, weights %s)"
          % (meta["model"], meta.get("exporter"), meta.get("opset"), meta.get("weights")))
    print("inputs:  %s %s from inputs.npz" % (tuple(x.shape), x.dtype))
    actual, ort_version = run_onnx(onnx_path, x)
    if "onnx" in outputs.files and outputs["onnx"].shape == actual.shape:
        same = float(np.max(np.abs(outputs["onnx"].astype(np.float64) - actual))) if actual.size else 0.0
        print("ONNX Runtime %s here; the stored ONNX logits are reproduced up to %.3g" % (ort_version, same))
    mismatch = report("ONNX Runtime vs the stored torch logits:", compare(expected, actual, atol, rtol))
    if args.torch:
        fresh = run_torch(meta, x)
        report("rebuilt torch model vs the stored torch logits (should agree):", compare(expected, fresh, atol, rtol))
        mismatch = report("ONNX Runtime vs the rebuilt torch model:", compare(fresh, actual, atol, rtol)) or mismatch
    other = [c for c in meta.get("failing_checks", []) if not c.startswith(("logits", "topk"))]
    if other:
        print("the gate also failed on: %s (not rerun by this script; see result.json)" % ", ".join(other))
    if mismatch:
        print("MISMATCH: ONNX Runtime does not reproduce the torch logits of %s" % meta["model"])
        return 1
    print("OK: ONNX Runtime agrees with the torch logits within atol/rtol")
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''
