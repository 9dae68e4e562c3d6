#!/usr/bin/env python3
"""Reproduce an ONNX parity mismatch found by pytest-onnx-parity.

    python reproduce.py           # ONNX Runtime on inputs.npz vs the stored torch logits
    python reproduce.py --torch   # also rebuild the torch model (needs torch and timm)
    python reproduce.py --module  # the divergent module's subgraph alone, on torch's values, at every
                                  # ONNX Runtime optimisation level (--reduced: its smallest diverging range)

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


def load_meta(here=HERE):
    with open(os.path.join(here, "bundle.json")) as fh:
        return json.load(fh)


def default_tolerance(meta, expected):
    """(atol, rtol) from the library's default for the stored logits' dtype, written into bundle.json.

    This script has no tolerance of its own: it applies the rule of
    pytest_onnx_parity.tolerances (atol = factor x RMS of the finite logits).
    """
    table = meta.get("default_tolerance") or {}
    rule = table.get(str(expected.dtype)) or table.get("float32")
    if rule is None:
        raise KeyError("bundle.json has no default_tolerance; pass --atol and --rtol")
    e = np.asarray(expected, dtype=np.float64)
    finite = e[np.isfinite(e)]
    scale = float(np.sqrt(np.mean(finite ** 2))) if finite.size else 0.0
    return float(rule["atol_factor"]) * scale, float(rule["rtol"])


def compare(expected, actual, atol, rtol, classes=True):
    """Element-wise |actual - expected| <= atol + rtol * |expected|, and top-1 agreement (of class logits:
    ``classes``; an embedding's or features' argmax means nothing).

    Non-finite values must match in place and value (NaN never equals anything).
    """
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape:
        return {"problem": "shapes differ: torch %s, ONNX %s" % (e.shape, a.shape), "mismatched": int(e.size),
                "total": int(e.size)}
    with np.errstate(invalid="ignore"):
        diff = np.abs(a - e)
    same_inf = np.isinf(e) & (e == a)
    diff[same_inf] = 0.0
    diff[~np.isfinite(diff)] = np.inf  # NaN on either side, or Inf against anything else
    allowed = atol + rtol * np.abs(np.where(np.isfinite(e), e, 0.0))
    over = diff > allowed
    out = {"max_abs_diff": float(np.max(diff)) if diff.size else 0.0, "mismatched": int(over.sum()),
           "total": int(e.size), "atol": float(atol), "rtol": float(rtol)}
    if classes and e.ndim == 2 and e.shape[0]:
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


def run_onnx(path, x, names=None):
    """ONNX Runtime on x: the outputs the gate compared (names, in the model's order), flat; else the first."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    outs = sess.run(names or None, {sess.get_inputs()[0].name: x})
    return (flat([np.asarray(o) for o in outs]) if names else outs[0]), ort.__version__


def run_torch(meta, x, here=HERE):
    import timm
    import torch

    args = meta.get("model_args") or {}  # features_only=True, num_classes=0, ...: the model the gate built
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
    model = timm.create_model(meta["architecture"], pretrained=False, **args)
    weights = os.path.join(here, "weights.pt")
    if os.path.isfile(weights):
        model.load_state_dict(torch.load(weights, map_location="cpu"))
    elif meta.get("weights") == "pretrained":
        model = timm.create_model(meta["architecture"], pretrained=True, **args)
    else:
        raise SystemExit("no weights.pt in the bundle: cannot rebuild the torch model with the same weights")
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    return flat([t.float().numpy() for t in (out if isinstance(out, (tuple, list)) else [out])])


def flat(arrays):
    """Each output flattened per sample, concatenated in order (an (N, C) output as it is), as the gate stores them."""
    if len(arrays) == 1 and arrays[0].ndim == 2:
        return arrays[0]
    return np.concatenate([np.asarray(a).reshape(len(a), -1) for a in arrays], axis=1)


def compare_all(meta, expected, actual, atol, rtol, given):
    """compare() on the whole outputs, or on each output of a features model with its own tolerance
    (bundle.json's segments) unless --atol/--rtol were given; [(title, result)]."""
    segments = meta.get("segments") or []
    classes = meta.get("output_kind") in (None, "logits")
    if not segments or expected.shape != actual.shape:
        return [("", compare(expected, actual, atol, rtol, classes))]
    out = []
    for seg in segments:
        cols = slice(seg["offset"], seg["offset"] + seg["size"])
        a_, r_ = (atol, rtol) if given or seg.get("atol") is None else (seg["atol"], seg["rtol"])
        out.append((seg["output"] + ":", compare(expected[:, cols], actual[:, cols], a_, r_, classes)))
    return out


def report_all(title, results):
    mismatch = False
    for name, r in results:
        mismatch = report(title if not name else "%s %s" % (title, name), r) or mismatch
    return mismatch


def module_compare(expected, actual, atol, rtol):
    """The per-layer rule: max |actual - expected| <= atol + rtol * rms(expected), over each output; NaN never passes."""
    worst = None
    for name, e in expected.items():
        e = np.asarray(e, dtype=np.float64)
        a = np.asarray(actual[name], dtype=np.float64)
        if e.shape != a.shape:
            return {"max_abs_diff": float("inf"), "rms": 0.0, "tolerance": atol, "passed": False}
        with np.errstate(invalid="ignore"):
            diff = np.abs(a - e)
        diff[e == a] = 0.0
        diff[~np.isfinite(diff)] = np.inf
        finite = e[np.isfinite(e)]
        rms = float(np.sqrt(np.mean(finite ** 2))) if finite.size else 0.0
        m = float(diff.max()) if diff.size else 0.0
        r = {"max_abs_diff": m, "rms": rms, "tolerance": atol + rtol * rms, "passed": m <= atol + rtol * rms}
        if worst is None or (not r["passed"] and worst["passed"]) or r["max_abs_diff"] > worst["max_abs_diff"]:
            worst = r
    return worst


def module_main(meta, here, reduced=False, atol=None, rtol=None):
    """--module: the divergent module's subgraph alone, on torch's values, at every ONNX Runtime level."""
    import onnxruntime as ort

    mod = meta.get("module") or {}
    part = mod.get("reduced") if reduced else mod
    if not mod.get("file") or not part:
        what = "reduced subgraph" if reduced and mod.get("file") else "module subgraph"
        print("this bundle has no %s (%s; see README.txt)" % (what, mod.get("problem") or "the per-layer check "
              "placed no first divergence, or the module could not be cut out"))
        return 2
    try:
        data = np.load(os.path.join(here, part["values"]))
        feeds = {i["name"]: data[i["key"]] for i in part["inputs"]}
        expected = {o["name"]: data[o["key"]] for o in part["outputs"]}
    except (OSError, KeyError) as exc:
        print("this bundle is incomplete: %s (see README.txt)" % exc)
        return 2
    atol = mod["atol"] if atol is None else atol
    rtol = mod["rtol"] if rtol is None else rtol
    fused = " with %s fused by the exporter" % ", ".join(mod["fused"]) if mod.get("fused") else ""
    print("module:  %s (%s%s) of %s (exporter %s, opset %s)"
          % (mod["module"], mod["module_type"], fused, meta["model"], meta.get("exporter"), meta.get("opset")))
    print("graph:   %s: %d of the %d nodes of %s (%s)" % (part["file"], part["nodes"], mod["file_nodes"],
                                                          meta.get("onnx_file") or "model.onnx", ", ".join(part["ops"])))
    if reduced:
        print("         reduced from the module's %d nodes; nodes in %s" % (part["of_nodes"], ", ".join(part["modules"])))
    for i in part["inputs"]:
        print("input:   %s %s from %s: %s" % (i["name"], tuple(i["shape"]), part["values"], i["source"]))
    against = part.get("expected", "torch's output")
    print("ONNX Runtime %s, each optimisation level against %s (max abs diff <= atol %.3g + rtol %.3g x RMS):"
          % (ort.__version__, against, atol, rtol))
    failing = []
    for level, enum in mod["ort_levels"].items():
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, enum)
        sess = ort.InferenceSession(os.path.join(here, part["file"]), sess_options=opts,
                                    providers=["CPUExecutionProvider"])
        got = dict(zip(list(expected), sess.run(list(expected), feeds), strict=True))
        r = module_compare(expected, got, atol, rtol)
        print("  %-9s max abs diff %.4g (%.3g x RMS %.3g), allowed %.3g: %s" % (
            level + ":", r["max_abs_diff"], r["max_abs_diff"] / r["rms"] if r["rms"] else float("inf"), r["rms"],
            r["tolerance"], "ok" if r["passed"] else "DIFFERS"))
        if not r["passed"]:
            failing.append(level)
    if mod.get("blame"):
        print("the gate's verdict: %s" % mod["blame"]["line"])
    if failing:
        print("MISMATCH: ONNX Runtime's %s differs from %s at %s" % (mod["module"], against, ", ".join(failing)))
        return 1
    print("OK: ONNX Runtime's %s agrees with %s at every optimisation level" % (mod["module"], against))
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description="Reproduce the ONNX parity mismatch of this bundle")
    p.add_argument("--bundle", default=HERE, help="the bundle's folder (default: this script's folder)")
    p.add_argument("--torch", action="store_true", help="also rebuild the torch side with timm from weights.pt")
    p.add_argument("--module", action="store_true", help="run the divergent module's subgraph alone (module.onnx)")
    p.add_argument("--reduced", action="store_true", help="with --module: its smallest diverging node range")
    p.add_argument("--atol", type=float, help="absolute tolerance (default: the gate's)")
    p.add_argument("--rtol", type=float, help="relative tolerance (default: the gate's)")
    args = p.parse_args(argv)
    here = args.bundle
    if (args.atol is None) != (args.rtol is None):
        print("give --atol and --rtol together")
        return 2
    try:
        meta = load_meta(here)
        if args.module or args.reduced:
            return module_main(meta, here, args.reduced, args.atol, args.rtol)
        x = np.load(os.path.join(here, "inputs.npz"))["input"]
        outputs = np.load(os.path.join(here, "outputs.npz"))
        expected = outputs["torch"]
        atol = args.atol if args.atol is not None else meta.get("atol")
        rtol = args.rtol if args.rtol is not None else meta.get("rtol")
        if (atol is None) != (rtol is None):
            print("give --atol and --rtol together")
            return 2
        if atol is None:
            atol, rtol = default_tolerance(meta, expected)
    except (OSError, KeyError, ValueError) as exc:
        print("this bundle is incomplete: %s (see README.txt)" % exc)
        return 2
    onnx_path = os.path.join(here, meta.get("onnx_file") or "model.onnx")
    if not os.path.isfile(onnx_path):
        print("this bundle has no ONNX file (see README.txt)")
        return 2
    print("model:   %s (exporter %s, opset %s, weights %s)"
          % (meta["model"], meta.get("exporter"), meta.get("opset"), meta.get("weights")))
    print("inputs:  %s %s from inputs.npz" % (tuple(x.shape), x.dtype))
    actual, ort_version = run_onnx(onnx_path, x, meta.get("output_names"))
    given = args.atol is not None
    if "onnx" in outputs.files and outputs["onnx"].shape == actual.shape:
        same = float(np.max(np.abs(outputs["onnx"].astype(np.float64) - actual))) if actual.size else 0.0
        print("ONNX Runtime %s here; the stored ONNX logits are reproduced up to %.3g" % (ort_version, same))
    mismatch = report_all("ONNX Runtime vs the stored torch logits:", compare_all(meta, expected, actual, atol, rtol, given))
    if args.torch:
        fresh = run_torch(meta, x, here)
        report_all("rebuilt torch model vs the stored torch logits (should agree):",
                   compare_all(meta, expected, fresh, atol, rtol, given))
        mismatch = report_all("ONNX Runtime vs the rebuilt torch model:",
                              compare_all(meta, fresh, actual, atol, rtol, given)) or mismatch
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
