"""The ``golden`` check (``--onnx-parity-golden DIR``): each side of the run against the golden it recorded.

Parity compares two sides that move together: when a timm release changes a model's forward, torch
and a fresh export still agree, although every file deployed from the old code now disagrees with
it; when an onnxruntime release changes a file's outputs, parity blames the export. A golden
(:mod:`..report.golden`) keeps both sides of an earlier run, and this check compares each side with
its own golden, on the same seeded batch:

* torch's outputs moved: the model changed (a timm or torch release, your code) while its spec,
  weights and data config did not; the message says whether the file moved with it;
* ONNX Runtime's outputs moved while torch's did not: the file or ONNX Runtime changed;
* neither moved: passed, naming the versions the golden was recorded with.

Each message names the versions the golden was recorded with and those of this run. A run without a
golden of its key records one, and the check is ``skipped`` saying where (commit it);
``--onnx-parity-golden-update`` rewrites it. A run whose logits check failed records nothing (a
golden keeps a run whose two sides agree). A golden that cannot be read is an error naming the file.

A side reproduces its golden when each kept value is within ``atol factor x RMS + rtol
x |golden|``, each output with its own RMS: strict for a golden recorded on this CPU with these versions and thread count
(reproduced exactly), looser across machines, versions and thread counts (float32 summation order); :func:`~..tolerances.golden_tolerance`,
docs/ci.md has the evidence.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GoldenError
from ..report.golden import (UPDATE, Golden, golden_key, golden_path, inputs_digest, keep, kept_parts, plan_segments,
                             read_golden, weights_key, write_golden)
from ..results import CheckResult, ParityResult
from ..tolerances import golden_tolerance
from .context import CheckContext

#: the versions that move each side: torch's outputs (the model's code), ONNX Runtime's on the file
TORCH_SIDE = ("timm", "torch")
ONNX_SIDE = ("onnxruntime", "onnx")
EXPORT_SIDE = ("torch", "onnxscript")  # the exporter, for the run's own export


def check(ctx: CheckContext, r: ParityResult) -> CheckResult:
    """Compare both sides with the golden of this run's key, or record one (see the module docstring)."""
    if ctx.inputs is None or ctx.expected is None:
        return CheckResult("golden", "skipped", "not run: the run has no outputs on the seeded batch")
    if ctx.actual is None:
        return CheckResult("golden", "skipped", "not run: ONNX Runtime could not run the file (see logits)")
    key = run_key(ctx, r)
    path = golden_path(str(ctx.options.golden), key)
    if ctx.options.golden_update or not path.exists():
        return _record(ctx, r, key, path, update=path.exists())
    golden = read_golden(path)
    if golden.key != key:
        differ = sorted(k for k in set(key) | set(golden.key) if key.get(k) != golden.key.get(k))
        raise GoldenError(f"golden file {path} holds the golden of another run (its key differs in "
                          f"{', '.join(differ)}): a file was copied or edited by hand. Delete it, or rerun with {UPDATE}")
    if golden.inputs.get("sha256") != inputs_digest(ctx.inputs.x):
        return CheckResult("golden", "error", f"the seeded batch of this run is not the one the golden {path} was recorded "
                           f"on (same seed and shape, other values: numpy's random stream changed?), so nothing can be "
                           f"compared. Record it afresh with {UPDATE}", {"path": str(path)})
    segments = plan_segments(ctx.layout.to_dict() if ctx.layout is not None else None, ctx.expected.shape[1])
    if segments != golden.segments or ctx.expected.shape[0] != golden.torch.shape[0]:
        return _reshaped(golden, segments, path, ctx)
    tolerance = golden_tolerance(same_machine(golden.recorded))
    torch_side = compare_side(golden.torch, keep(ctx.expected, segments), segments, tolerance)
    onnx_side = compare_side(golden.onnx, keep(ctx.actual, segments), segments, tolerance)
    return _verdict(ctx, golden, path, torch_side, onnx_side)


def same_machine(recorded: dict[str, Any]) -> bool:
    """Whether a golden was recorded here: this CPU and core count, this run's versions and torch thread count
    (random weights are calibrated on that many threads). Then the strict tolerance applies."""
    here = _versions()
    return all(recorded.get(k) == here[k] for k in ("cpu", "cpu_count", "versions", "torch_threads"))


def run_key(ctx: CheckContext, r: ParityResult) -> dict[str, Any]:
    """Everything that makes two runs comparable (:func:`~..report.golden.golden_key`)."""
    from ..model.build import model_name, weights_identity

    file = None
    if ctx.given_file:  # the file as written (@FILE or onnx=), never where it was resolved to on this machine
        _, at, tail = r.model.rpartition("@")
        file = tail if at and tail.lower().endswith(".onnx") else ctx.path.name
    cpu = None
    if ctx.options.precision != "fp32":  # fp16 and int8 kernels differ by instruction set (runtime/environment.py)
        from ..runtime.environment import cpu_flags_text, cpu_info

        cpu = f"{cpu_info()['machine']}: {cpu_flags_text()}"
    return golden_key(model=model_name(ctx.loaded), weights=weights_key(weights_identity(ctx.loaded)),
                      variant=r.variant, data_config=r.data_config, seed=ctx.options.seed, batch=list(ctx.inputs.x.shape) if ctx.inputs is not None else None,
                      file=file, output=ctx.options.output, cpu=cpu)


def _versions() -> dict[str, Any]:
    import os

    import torch

    from ..runtime.environment import cpu_info, library_versions

    info = cpu_info()
    return {"versions": {"python": platform.python_version(), **library_versions()},
            "cpu": f"{info['model'] or 'unknown'} ({info['machine']})", "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}


def _record(ctx: CheckContext, r: ParityResult, key: dict[str, Any], path: Path, *, update: bool) -> CheckResult:
    from ..model.build import weights_identity

    assert ctx.inputs is not None and ctx.expected is not None and ctx.actual is not None
    logits = r.check("logits")
    if logits is not None and logits.status in ("failed", "error"):
        return CheckResult("golden", "skipped", f"not recorded: the logits check {logits.status}, and a golden keeps a run "
                           f"whose two sides agree; fix that first (see logits), then rerun", {"path": str(path)})
    if not (np.isfinite(ctx.expected).all() and np.isfinite(ctx.actual).all()):
        return CheckResult("golden", "skipped", "not recorded: the outputs hold NaN or Inf (see logits)", {"path": str(path)})
    segments = plan_segments(ctx.layout.to_dict() if ctx.layout is not None else None, ctx.expected.shape[1])
    recorded = {**_versions(), "weights_identity": weights_identity(ctx.loaded)}
    x = ctx.inputs.x
    golden = Golden(key=key, recorded=recorded, segments=segments, torch=keep(ctx.expected, segments),
                    onnx=keep(ctx.actual, segments),
                    inputs={"seed": ctx.options.seed, "shape": list(x.shape), "dtype": str(x.dtype),
                            "sha256": inputs_digest(x)})
    write_golden(path, golden)
    with_ = _with(recorded, ("torch", "timm", "onnx", "onnxruntime"))
    if update:
        msg = (f"rewrote the golden {path} ({UPDATE}), recorded with {with_}: commit it; later runs compare both "
               "sides with it")
    else:
        msg = (f"no golden for {ctx.model_label} with this spec, weights, variant and data config yet: recorded one at "
               f"{path} ({with_}); commit it, and later runs compare both sides with it")
    return CheckResult("golden", "skipped", msg, {"path": str(path), "recorded": "updated" if update else "new"})


@dataclass
class SideDiff:
    """One side of the run against its golden."""

    passed: bool
    tolerance: tuple[float, float]  # (atol factor x RMS, rtol)
    max_abs_diff: float
    rel_diff: float  # the largest difference over its output's RMS
    mismatched: int
    total: int
    worst: str  # where the largest excess is, with both values

    def brief(self) -> str:
        return f"max abs diff {self.max_abs_diff:.3g} ({self.rel_diff:.2g} x its RMS)"


def compare_side(golden: np.ndarray, now: np.ndarray, segments: list[dict[str, Any]],
                 tolerance: tuple[float, float]) -> SideDiff:
    """``now`` against ``golden`` (both kept values), each output with ``tolerance`` (atol factor times its own
    RMS, rtol; :func:`~..tolerances.golden_tolerance`)."""
    from ..tolerances import logit_rms

    factor, rtol = tolerance
    g64, n64 = golden.astype(np.float64), now.astype(np.float64)
    with np.errstate(invalid="ignore"):
        diff = np.abs(n64 - g64)
    diff[~np.isfinite(diff)] = np.inf
    allowed, scale = np.empty_like(g64), np.empty_like(g64)
    for seg, cols in kept_parts(segments):
        rms = logit_rms(g64[:, cols])
        allowed[:, cols] = factor * rms + rtol * np.abs(g64[:, cols])
        scale[:, cols] = rms if rms > 0 else 1.0
    over = diff > allowed
    rel = diff / scale
    worst = ""
    if over.any():
        i, j = np.unravel_index(int(np.argmax(np.where(over, diff - allowed, -np.inf))), diff.shape)
        seg, cols = next((s, c) for s, c in kept_parts(segments) if c.start <= j < c.stop)
        element = (j - cols.start) * seg["stride"]
        named = f"output {seg['index']} " if len(segments) > 1 else ""
        worst = (f"worst at sample {i}, {named}element {element}: golden {g64[i, j]:.6g}, now {n64[i, j]:.6g} "
                 f"(up to {allowed[i, j]:.3g} allowed)")
    return SideDiff(passed=not bool(over.any()), tolerance=(factor, rtol), max_abs_diff=float(diff.max()) if diff.size else 0.0,
                    rel_diff=float(rel.max()) if rel.size else 0.0, mismatched=int(over.sum()), total=int(diff.size),
                    worst=worst)


def _with(recorded: dict[str, Any], names: tuple[str, ...]) -> str:
    versions = recorded.get("versions", {})
    return " / ".join(f"{n} {versions.get(n, 'unknown')}" for n in names)


def _since(side: str, golden: Golden, names: tuple[str, ...], d: SideDiff) -> str:
    """"torch side changed since the golden recorded with timm A / torch B (now timm C / torch D): ..."."""
    from ..runtime.environment import library_versions

    was, now = _with(golden.recorded, names), _with({"versions": library_versions()}, names)
    versions = f"(now {now})" if now != was else "(the same versions now)"
    factor, rtol = d.tolerance
    which = ("its own machine, versions and thread count" if d.tolerance == golden_tolerance(True) else
             "another machine, versions or thread count")
    return (f"{side} side changed since the golden recorded with {was} {versions}: {d.brief()}, {d.mismatched} of "
            f"{d.total} values beyond {factor:g} x RMS + {rtol:g} x |golden| (the tolerance of {which}); {d.worst}")


def _verdict(ctx: CheckContext, golden: Golden, path: Path, t: SideDiff, o: SideDiff) -> CheckResult:
    onnx_names = ONNX_SIDE + (() if ctx.given_file else EXPORT_SIDE)
    details = {"path": str(path), "torch_max_abs_diff": t.max_abs_diff, "onnx_max_abs_diff": o.max_abs_diff,
               "torch_rel_diff": t.rel_diff, "onnx_rel_diff": o.rel_diff, "tolerance": list(t.tolerance),
               "moved": [s for s, d in (("torch", t), ("onnx", o)) if not d.passed],
               "recorded_with": golden.recorded.get("versions", {})}
    if t.passed and o.passed:
        return CheckResult("golden", "passed", f"both sides reproduce the golden {path} recorded with "
                           f"{_with(golden.recorded, ('torch', 'timm', 'onnx', 'onnxruntime'))}: torch {t.brief()}, "
                           f"ONNX Runtime {o.brief()} (allowed {t.tolerance[0]:g} x RMS + {t.tolerance[1]:g} x |golden|)",
                           details)
    if not t.passed:
        lines = [_since("torch", golden, TORCH_SIDE, t),
                 "The model's forward changed while its spec, weights and data config did not (a timm or torch release, "
                 "a change in your code): files exported from the code the golden saw now disagree with this code.",
                 (f"The ONNX side moved too ({o.brief()}): the file was exported from the changed model." if not o.passed
                  else f"The ONNX side reproduces its golden ({o.brief()}): this file still computes what it did, "
                       "not what the model computes now.")]
    else:
        lines = [_since("ONNX", golden, onnx_names, o),
                 f"The torch side reproduces its golden ({t.brief()}): the model did not change; the file (a new "
                 "export, a simplifier, an edited or replaced file) or ONNX Runtime did."]
    here = _versions()["cpu"]
    if golden.recorded.get("cpu") not in (None, here):
        lines.append(f"The golden was recorded on another CPU ({golden.recorded.get('cpu')}; here {here}): float "
                     "rounding differs between CPUs, by less than this tolerance for well-conditioned models.")
    lines.append(f"If the change is intended, rerun with {UPDATE} and commit {path} (docs/ci.md).")
    status = "failed"
    if ctx.inconclusive and t.tolerance != golden_tolerance(True):  # rounding alone moves it across machines
        status = "error"
        lines.insert(0, "Not judged: the logits check found this model ill-conditioned (see logits), so a golden "
                        "recorded on another machine, with other versions or thread counts cannot tell a change from "
                        "rounding.")
    return CheckResult("golden", status, "\n".join(lines), details)


def _reshaped(golden: Golden, segments: list[dict[str, Any]], path: Path, ctx: CheckContext) -> CheckResult:
    def shapes(segs: list[dict[str, Any]], n: int) -> str:
        return ", ".join(f"({n}, {', '.join(map(str, s['shape']))})" for s in segs)

    was, now = shapes(golden.segments, golden.torch.shape[0]), shapes(segments, ctx.expected.shape[0])  # type: ignore[union-attr]
    return CheckResult("golden", "failed", f"torch side changed since the golden recorded with "
                       f"{_with(golden.recorded, TORCH_SIDE)}: the model's outputs are now {now}, the golden's {was}. "
                       f"If the change is intended, rerun with {UPDATE} and commit {path} (docs/ci.md).",
                       {"path": str(path), "moved": ["torch", "onnx"]})
