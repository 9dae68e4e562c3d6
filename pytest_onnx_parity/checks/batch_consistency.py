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
    title = (f"Outputs depend on the batch: sample {picks[0]} alone differs from the same sample in a batch of "
             f"{x.shape[0]} (a batch size baked into the graph?)")
    if ctx.layout is None or ctx.kind == "logits" or batched.shape[1:] != singles.shape[1:]:
        cmp = compare_logits(batched[picks], singles, tolerance=ctx.logits_tolerance(batched[picks]))
        passed, max_diff, failing = cmp.passed, cmp.max_abs_diff, cmp.message(title)
    else:  # each output with the tolerance of its own magnitude
        from .output_kinds import compare_parts

        parts = compare_parts(batched[picks], singles, ctx.layout, ctx.logits_tolerance)
        passed, max_diff = all(c.passed for _, c in parts), max(c.max_abs_diff for _, c in parts)
        named = len(parts) > 1
        failing = "\n".join([title, ""] + [c.message(f"{s.label}: not close!" if named else "Not close!")
                                          for s, c in parts if not c.passed])
    msg = f"sample {picks[0]} run alone equals its output inside a batch of {x.shape[0]}" if passed else failing
    return CheckResult("batch_consistency", "passed" if passed else "failed", msg,
                       {"samples": picks, "max_abs_diff": max_diff})
