"""The ``logits`` check: torch against ONNX Runtime on a seeded random batch.

The tolerance scales with the logits (:mod:`..tolerances`); NaN or Inf on the torch side is
inconclusive (naming the first module that produced it), constant logits cannot fail and so
do not pass, and a failed comparison goes to float64 arbitration (:mod:`.arbitration`).
"""
from __future__ import annotations

import numpy as np

from ..errors import OnnxFileError
from ..results import CheckResult
from ..tolerances import logit_rms
from .context import CheckContext

TITLE = "Logits on a random batch are not close!"


def ort_logits(ctx: CheckContext) -> np.ndarray:
    """ONNX Runtime's logits on the run's inputs; an output of another shape than torch's logits is an
    :class:`OnnxFileError` naming the fix."""
    from ..runtime.forward import logits_output

    assert ctx.inputs is not None and ctx.expected is not None
    actual = ctx.inputs.feed.run(ctx.session, ctx.inputs.raw)
    expected = ctx.expected
    if actual.shape != expected.shape:
        session = ctx.session
        outs = ", ".join(f"{o.name!r} {list(o.shape)}" for o in session.get_outputs())
        raise OnnxFileError(
            f"the file's output {logits_output(session, getattr(ctx.model, 'num_classes', None), ctx.options.output)!r} "
            f"gives shape {tuple(actual.shape)}; torch's logits have shape {tuple(expected.shape)}. "
            f"The file's outputs: {outs}. Name the logits output (output=NAME, --onnx-parity-output NAME), "
            "or check that the file was exported from this model.")
    return actual


def check(ctx: CheckContext) -> CheckResult:
    from ..compare import compare_logits
    from .arbitration import arbitrate
    from .conditioning import first_nonfinite_module

    assert ctx.inputs is not None and ctx.expected is not None and ctx.actual is not None
    expected, actual = ctx.expected, ctx.actual
    atol, rtol = ctx.logits_tolerance(expected)
    cmp = compare_logits(expected, actual, atol=atol, rtol=rtol)
    finite = expected[np.isfinite(expected)]
    details = {**cmp.to_dict(), "logit_rms": logit_rms(expected), "batch": int(expected.shape[0])}
    if cmp.expected_nonfinite:
        where = first_nonfinite_module(ctx.model, ctx.inputs.x)
        details["first_nonfinite_module"] = where
        origin = f", first produced by module {where}" if where else ""
        return CheckResult(
            "logits", "error",
            f"inconclusive: torch's own logits hold NaN or Inf{origin}, so no comparison with them can pass or "
            "fail the export. Check the model with other weights (NAME=pretrained or NAME=/path/to/checkpoint) "
            f"or inputs.\n\n{cmp.message(TITLE)}", details)
    if float(finite.std()) < 1e-6:
        return CheckResult("logits", "failed",
                           f"torch logits are constant (std {float(finite.std()):.2g}): this check cannot fail, "
                           "so it does not pass. Use =random weights (made non-degenerate) or real weights.", details)
    if not cmp.passed:
        verdict = arbitrate(ctx.model, ctx.inputs.x, cmp.max_abs_diff, cmp.atol, details, expected=expected,
                            seed=ctx.options.seed)
        if verdict is not None:
            return CheckResult("logits", "error", f"{verdict}\n\n{cmp.message(TITLE)}", details)
    return CheckResult("logits", "passed" if cmp.passed else "failed", cmp.message(TITLE), details)
