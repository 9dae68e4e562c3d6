"""The ``topk`` check: top-k agreement on the random batch; near-tie swaps are reported, not failed.

Classes are named when their names are known (:func:`~..runtime.outputs.label_names`); an embedding
or features have no classes, and the check is skipped, saying so.
"""
from __future__ import annotations

import numpy as np

from ..results import CheckResult
from .context import CheckContext


def check(ctx: CheckContext) -> CheckResult:
    from ..compare import compare_topk
    from ..runtime.outputs import label_names
    from .output_kinds import not_logits

    assert ctx.expected is not None and ctx.actual is not None
    expected, actual, o = ctx.expected, ctx.actual, ctx.options
    if ctx.layout is not None and ctx.kind != "logits":
        how = ("cosine similarity and nearest neighbours" if ctx.kind == "embedding" else "every output")
        return CheckResult("topk", "skipped", f"{not_logits(ctx.layout, 'top-k agreement')} (the logits check "
                           f"compares {how})", {"output_kind": ctx.kind})
    if not (np.isfinite(expected).all() and np.isfinite(actual).all()):
        return CheckResult("topk", "skipped", "not run: the logits hold NaN or Inf (see logits)")
    cmp = compare_topk(expected, actual, k=o.topk, min_agreement=o.min_agreement, tolerance=ctx.logits_tolerance(expected),
                       labels=label_names(ctx.model, expected.shape[-1]))
    status = "passed" if cmp.passed else "failed"
    message = cmp.message()
    if not cmp.passed and ctx.inconclusive:
        status = "error"
        message = "inconclusive: the logits check found the model ill-conditioned (see logits)\n\n" + message
    return CheckResult("topk", status, message, cmp.to_dict())
