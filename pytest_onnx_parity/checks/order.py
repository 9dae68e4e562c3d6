"""The checks of one run, in order, and how their statuses fold into the run's.

:func:`run_checks` is what :meth:`~..run.ParityRun.execute` calls once the model and the file
are ready: it draws the random batch, runs both sides, calls each check of :mod:`.checks` in
the order the run's docstring lists, and folds the statuses (:func:`fold_status`): ``failed``
if any failed, else ``error`` (inconclusive) if any could not be judged, else ``passed`` only
when at least one check passed.
"""
from __future__ import annotations

import time
from typing import Callable

from ..errors import OnnxParityError
from ..results import CheckResult, ParityResult
from .context import CheckContext


def run_checks(ctx: CheckContext, r: ParityResult, *, given_file: bool) -> None:
    """Every check of a run on ``ctx``, appended to ``r.checks``; then the headline figures and the status."""
    from . import batch_consistency, data_config, headroom, layers, logits, real_images, topk, weights
    from ..preprocessing.dataconfig import DATA_CONFIG_FIELDS, sized_config
    from ..runtime.feeds import feed_for
    from ..runtime.forward import fixed_batch, torch_forward_layout
    from .context import Inputs

    o = ctx.options
    t = time.perf_counter()
    ctx.progress("checks")
    r.data_config = {k: ctx.model_config[k] for k in DATA_CONFIG_FIELDS}
    checks = r.checks
    checks.append(weights.check(ctx))
    checks.append(_guarded("data_config", lambda: data_config.check(ctx)))
    fixed = fixed_batch(ctx.session) if given_file else None
    feed = feed_for(ctx.embedded)  # float32 batches, or uint8 pixels for a file with embedded preprocessing
    x, raw = feed.batch(sized_config(ctx.model_config, o.image_size),
                        fixed * -(-o.batch_size // fixed) if fixed else o.batch_size, o.seed)
    ctx.inputs = Inputs(x=x, raw=raw, feed=feed, fixed_batch=fixed)
    ctx.expected, ctx.layout = torch_forward_layout(ctx.model, x)  # the output kind, decided once
    r.output_kind = ctx.layout.kind
    try:
        ctx.actual = logits.ort_logits(ctx)
        _what_ran(ctx, r)  # the runner is open: what ran is known
    except OnnxParityError as exc:
        checks.append(CheckResult("logits", "error", str(exc)))
        for name in ("topk", "batch_consistency"):
            checks.append(CheckResult(name, "skipped", "not run: ONNX Runtime could not run the file (see logits)"))
    else:
        if o.precision == "int8":
            how = ("top-1 agreement and accuracy" if ctx.kind == "logits" else
                   "the cosine similarity of its outputs to torch's")
            why = f"not run: an int8 file is judged by {how} on real images (see real_images)"
            checks += [CheckResult("logits", "skipped", why), CheckResult("topk", "skipped", why)]
        else:
            checks.append(logits.check(ctx))
            ctx.inconclusive = checks[-1].status == "error"
            checks.append(topk.check(ctx))
        checks.append(_guarded("batch_consistency", lambda: batch_consistency.check(ctx)))
    checks.append(_guarded("real_images", lambda: real_images.check(ctx)))
    if (o.preprocess or "metadata") != "metadata":  # the deployment's own preprocessing, against timm's
        from . import preprocessing

        real = checks[-1]
        checks.append(_guarded("preprocessing", lambda: preprocessing.check(ctx, real)))
    checks.append(_guarded("headroom", lambda: headroom.check(ctx)))
    # an int8 file's verdict is its real images' (its logits are never compared element-wise)
    verdicts = ("real_images",) if o.precision == "int8" else ("logits", "topk", "batch_consistency")
    graph_failed = any(c.status in ("failed", "error") for c in checks if c.name in verdicts)
    if o.layers == "always" or (o.layers == "on-failure" and graph_failed):
        checks.append(_guarded("layers", lambda: layers.check(ctx)))
    else:
        why = "--onnx-parity-layers never" if o.layers == "never" else "logits passed (--onnx-parity-layers on-failure)"
        checks.append(CheckResult("layers", "skipped", f"not run: {why}"))
    if o.golden:  # after the others: it reads the logits verdict before recording a golden
        from . import golden

        checks.append(_guarded("golden", lambda: golden.check(ctx, r)))
    if ctx.precision_note:  # the runtime computed in a lower precision than asked: the verdicts it moved say so
        for c in checks:
            if c.status == "failed" and c.name in ("logits", "topk", "batch_consistency", "real_images", "layers"):
                c.message = f"{ctx.precision_note}\n\n{c.message}"
    weights.point_at_weights(checks)
    _figures(r)
    r.timings["checks_s"] = time.perf_counter() - t
    fold_status(r)


def _what_ran(ctx: CheckContext, r: ParityResult) -> None:
    """What the runner ran, on the context: its info, the precision profile to judge by, and the note when it ran
    a lower precision than the file asks for (checks/runtime_precision.py)."""
    from ..runtime.runner import RuntimeInfo
    from .runtime_precision import effective_profile, precision_mismatch

    ctx.runtime_info = r.runtime_info
    if not r.runtime_info:
        return
    info = RuntimeInfo(**{k: r.runtime_info[k] for k in ("runtime", "backend", "precision", "precision_reason")
                          if k in r.runtime_info})
    declared = None
    if info.runtime == "openvino":
        from ..runtime.openvino import declared_precision

        declared = declared_precision(ctx.settings)
    ctx.profile = effective_profile(ctx.options.precision, info, declared)
    ctx.precision_note = precision_mismatch(ctx.options.precision, info, declared)
    if ctx.profile != ctx.options.precision:
        r.runtime_info = {**r.runtime_info, "judged_at": ctx.profile}


def fold_status(r: ParityResult) -> None:
    """The model's status from its checks (see the module docstring)."""
    statuses = {c.status for c in r.checks}
    r.status = "failed" if "failed" in statuses else "error" if "error" in statuses else "passed"
    if r.status == "passed" and "passed" not in statuses:
        r.checks.append(CheckResult("evidence", "error", "nothing was compared: every check was skipped"))
        r.status = "error"
    if r.status == "error":
        r.error = "; ".join(f"{c.name}: {c.message.splitlines()[0]}" for c in r.checks if c.status == "error")


def _figures(r: ParityResult) -> None:
    """The result's headline figures, read from the checks that measured them."""
    logits, topk, real, layers = (r.check(n) for n in ("logits", "topk", "real_images", "layers"))
    if logits is not None and "max_abs_diff" in logits.details:
        r.max_abs_diff = logits.details["max_abs_diff"]
    if topk is not None and "top1_agreement" in topk.details:
        r.top1_agreement = topk.details["top1_agreement"]
    elif real is not None and r.variant and r.variant.get("precision") == "int8":
        r.top1_agreement = real.details.get("top1_agreement")
    if layers is not None and layers.comparison is not None:
        r.layer_comparison = layers.comparison
        first = layers.comparison.first_divergence
        r.first_divergence = first.name if first is not None else None


def _guarded(name: str, fn: Callable[[], CheckResult]) -> CheckResult:
    """A check whose own errors (an unreadable image, a file ONNX Runtime cannot run) become its result."""
    try:
        return fn()
    except OnnxParityError as exc:
        return CheckResult(name, "error", str(exc))
