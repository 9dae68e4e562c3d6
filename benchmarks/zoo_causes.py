"""Cause classes of the zoo sweep: why a model did not pass, read off its gate report entry.

Used by benchmarks/zoo_sweep.py; no third-party imports. Every non-passing entry gets exactly
one class (first rule that matches, in this order):

* ``skipped``: the gate skipped the entry (its reason is quoted).
* ``exporter limitation``: torch.onnx raised while exporting (the entry's error says
  "<exporter> exporter failed: ..."; the exporter's reason is quoted).
* ``runtime limitation``: ONNX Runtime cannot load the file, or cannot run it (the entry's
  error or a check's error says so).
* ``model limitation (timm)``: timm could not build the model with these weights.
* ``ill-conditioned weights``: every check without a verdict is "inconclusive" and no check
  failed: the package's float64 arbitration found that torch float32 itself is as far from
  torch float64 as ONNX Runtime is from torch (its ``details["float64"]`` and
  ``details["torch_self_sensitivity"]`` are quoted), or torch's own output is NaN/Inf.
* ``defect of ours``: anything else: a check that failed (the float64 evidence the package
  recorded, if any, is quoted: ``blames_export`` true means ONNX Runtime is farther from
  float64 than float32 torch is by more than the arbitration factor), a check that stopped
  with an error that is not one of the above, or a gate process that timed out or died.
  This is the false-alarm count the sweep aims to keep at zero; every entry here needs a look.
"""
from __future__ import annotations

import re
from typing import Any

CLASSES = ("exporter limitation", "runtime limitation", "model limitation (timm)", "ill-conditioned weights",
           "skipped", "defect of ours")
_RUNTIME = re.compile(r"ONNX Runtime (?:cannot load|could not (?:load|run)|failed to (?:load|run))")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _text(x: Any) -> str:
    return " ".join(_ANSI.sub("", str(x or "")).split())


def _clip(text: str, n: int = 400) -> str:
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def exporter_reason(err: str) -> str:
    """The exporter's reason, short: its outer message's first sentence and, for a chain ``A <- B <- C``, the root cause."""
    parts = [p.strip() for p in err.split(" <- ") if p.strip()]
    if not parts:
        return err
    first = re.split(r"(?<=[a-z)\]'`])\. (?=[A-Z])", parts[0])[0]
    return _clip(first if len(parts) == 1 else f"{_clip(first, 200)} … {parts[-1]}", 500)


def float64_evidence(check: dict[str, Any]) -> str:
    """The float64 arbitration and torch's own sensitivity a check recorded, as one sentence ("" if none)."""
    d = check.get("details") or check  # the report flattens a check's details into the check itself
    parts = []
    f64 = d.get("float64")
    if isinstance(f64, dict) and f64.get("delta") is not None:
        own = f64.get("torch_float32_error") or 0.0
        ratio = f"{f64['delta'] / own:.3g}x" if own else "inf x"
        parts.append(f"at {f64.get('where', '?')}: ONNX Runtime vs torch {f64['delta']:.3g}, torch float32 vs float64 "
                     f"{own:.3g} ({ratio}; blames export: {'yes' if f64.get('blames_export') else 'no'})")
    if d.get("torch_self_sensitivity") is not None:
        parts.append(f"torch moves by {d['torch_self_sensitivity']:.3g} for a 1e-6 input change")
    if d.get("first_nonfinite_module"):
        parts.append(f"first NaN/Inf from module {d['first_nonfinite_module']}")
    return "; ".join(parts)


def classify(entry: dict[str, Any]) -> tuple[str, str]:
    """``(cause class, evidence)`` of a report entry; ``("passed", "")`` for a passed one."""
    status = entry.get("status")
    if status == "passed":
        return "passed", ""
    err = _text(entry.get("error"))
    if status == "skipped":
        return "skipped", _clip(err or "skipped without a reason")
    if "recorded by zoo_sweep.py" in err:
        return "defect of ours", f"sweep: {err}"
    if re.search(r"\b(?:dynamo|torchscript) exporter failed", err):
        return "exporter limitation", exporter_reason(err)
    if _RUNTIME.search(err):
        return "runtime limitation", _clip(err)
    if "timm could not build" in err:
        return "model limitation (timm)", _clip(err)
    checks = entry.get("checks") or []
    bad = [c for c in checks if c.get("status") in ("failed", "error")]
    if not bad:
        return "defect of ours", _clip(f"status {status} with no failing check: {err or 'no message'}")
    runtime = [c for c in bad if c.get("status") == "error" and _RUNTIME.search(_text(c.get("message")))]
    if runtime:
        return "runtime limitation", _clip(f"{runtime[0].get('name')}: {_text(runtime[0].get('message'))}")
    failed = [c for c in bad if c.get("status") == "failed"]
    other = [c for c in bad if c.get("status") == "error" and not _text(c.get("message")).startswith("inconclusive")]
    if not failed and not other:
        ev = []
        for c in bad:
            e = float64_evidence(c)
            ev.append(f"{c.get('name')}: {e or _clip(_text(c.get('message')), 200)}")
        return "ill-conditioned weights", "; ".join(ev)
    ev = []
    for c in failed + other:
        first = _clip(_text(str(c.get("message") or "").strip().split("\n")[0]), 200)
        e = float64_evidence(c)
        ev.append(f"{c.get('name')} {c.get('status')}: {first}" + (f" [float64 {e}]" if e else " [no float64 evidence]"))
    return "defect of ours", "; ".join(ev)


def classify_report(report: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """Class -> ``[(model, evidence), ...]`` for the non-passing entries of a report (every class present)."""
    out: dict[str, list[tuple[str, str]]] = {c: [] for c in CLASSES}
    for e in sorted(report.get("models", []), key=lambda e: str(e.get("model"))):
        cls, ev = classify(e)
        if cls != "passed":
            out[cls].append((str(e["model"]), ev))
    return out
