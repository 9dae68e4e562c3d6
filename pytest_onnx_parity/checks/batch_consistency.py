"""The ``batch_consistency`` check: a sample run alone gives what it gives inside the batch.

A batch size baked into the graph, or an op that mixes samples, shows here. A file with a
batch fixed in it is skipped, saying so.
"""
from __future__ import annotations

import numpy as np

from ..results import CheckResult
from .context import CheckContext


def check(ctx: CheckContext) -> CheckResult:
    from ..compare import compare_logits

    assert ctx.inputs is not None and ctx.actual is not None
    fixed = ctx.inputs.fixed_batch
    if fixed:
        return CheckResult("batch_consistency", "skipped",
                           f"not run: batch fixed at {fixed} in the file, so every sample runs in a batch of {fixed}",
                           {"fixed_batch": fixed})
    x, batched, feed = ctx.inputs.x, ctx.actual, ctx.inputs.feed
    if not np.isfinite(batched).all():
        return CheckResult("batch_consistency", "skipped", "not judged: the ONNX outputs hold NaN or Inf (see logits)")
    picks = [x.shape[0] - 1]  # the last sample alone: a batch size baked into the graph shows
    singles = np.concatenate([feed.run(ctx.session, feed.one(ctx.inputs.raw, i)) for i in picks])
    atol, rtol = ctx.logits_tolerance(batched)
    cmp = compare_logits(batched[picks], singles, atol=atol, rtol=rtol)
    msg = (f"sample {picks[0]} run alone equals its output inside a batch of {x.shape[0]}" if cmp.passed else
           cmp.message(f"Outputs depend on the batch: sample {picks[0]} alone differs from the same sample in a batch of "
                       f"{x.shape[0]} (a batch size baked into the graph?)"))
    return CheckResult("batch_consistency", "passed" if cmp.passed else "failed", msg,
                       {"samples": picks, "max_abs_diff": cmp.max_abs_diff})
