"""Who to blame when a simplified file departs: the same checks on the export before the simplifier ran.

A simplifier variant (``--onnx-parity-simplifier``) that fails is rerun on its unsimplified export, on
the same inputs: when that file passes the checks that failed, the simplifier changed the result, and
each failed check says so (``details["blame"] = "simplifier"``, with the simplifier's version); when it
fails too, the difference was there before the simplifier ran, and the checks say that instead.
"""
from __future__ import annotations

from dataclasses import replace

from ..errors import OnnxParityError
from ..results import CheckResult, ParityResult
from .context import CheckContext

def blame_simplifier(ctx: CheckContext, r: ParityResult) -> None:
    """When a simplified file failed, say whether the unsimplified export passes (then: blame the simplifier)."""
    failed = [c for c in r.checks if c.status == "failed"]
    if ctx.unsimplified is None or not failed or ctx.inputs is None or ctx.expected is None:
        return
    from ..onnxfile.io import read_metadata
    from ..onnxfile.simplify import SIMPLIFIER_KEY
    from ..runtime.forward import choose_outputs
    from ..runtime.runner import open_runner
    from . import batch_consistency, logits, topk

    o = ctx.options
    try:
        session = open_runner(ctx.unsimplified, ctx.settings)
        if ctx.layout is not None:
            choose_outputs(session, ctx.layout, o.output)
        base = replace(ctx, session_factory=lambda: session, export=replace(ctx.export, path=ctx.unsimplified))
        base.actual = ctx.inputs.feed.run(session, ctx.inputs.raw)
        # the checks that compare the file's outputs with torch's on the run's batch: rerun on the unsimplified file
        reruns = {"logits": logits.check, "topk": topk.check, "batch_consistency": batch_consistency.check}
        before = {name: fn(base) for name, fn in reruns.items() if r.check(name) is not None}
    except OnnxParityError:
        return
    judged = [name for name in before if r.check(name).status == "failed"]  # type: ignore[union-attr]
    if not judged:
        return  # what failed (real images, layers) is not rerun here: nothing to say either way
    who = read_metadata(ctx.path).get(SIMPLIFIER_KEY, o.simplifier)
    clean = all(before[name].status == "passed" for name in judged)
    for c in failed:
        was = before.get(c.name)
        if clean:
            c.details["blame"] = "simplifier"
            note = (f"Blame: the simplifier ({who}). The export before it ran passes "
                    f"{'this check' if was is not None else ', '.join(b.name for b in before.values())} on the same "
                    f"inputs{_figure(was)}: the simplified file departs from torch, the unsimplified one does not.")
        else:
            note = (f"The export before the simplifier ({who}) ran fails too{_figure(was)}: the difference is not "
                    "the simplifier's (see the unsimplified variant).")
        c.message = f"{note}\n{c.message}"


def _figure(c: CheckResult | None) -> str:
    d = c.details.get("max_abs_diff") if c is not None else None
    return f" (max abs diff {d:.3g})" if isinstance(d, (int, float)) else ""
