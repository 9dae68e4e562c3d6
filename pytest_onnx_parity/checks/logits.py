"""The ``logits`` check: torch against ONNX Runtime on a seeded random batch.

The tolerance scales with the logits (:mod:`..tolerances`); NaN or Inf on the torch side is
inconclusive (naming the first module that produced it), constant logits cannot fail and so
do not pass, and a failed comparison goes to float64 arbitration (:mod:`.arbitration`).

The check keeps its name for every output kind (:mod:`..runtime.outputs`): an embedding is
also judged by cosine similarity and nearest neighbours, features output by output, each
with the tolerance of its own magnitude (:mod:`.output_kinds`).
"""
from __future__ import annotations

import numpy as np

from ..errors import OnnxFileError
from ..results import CheckResult
from ..tolerances import logit_rms
from .context import CheckContext

TITLE = "Logits on a random batch are not close!"
#: the title of a failed comparison, by output kind
TITLES = {"logits": TITLE, "embedding": "Embeddings on a random batch are not close!",
          "features": "Features on a random batch are not close!"}


def ort_logits(ctx: CheckContext) -> np.ndarray:
    """ONNX Runtime's outputs on the run's inputs, flat as torch's (the logits of a classifier); the file's
    outputs are chosen for the model's output kind first (:func:`~..runtime.forward.choose_outputs`). An
    output of another shape than torch's is an :class:`OnnxFileError` naming the fix."""
    from ..runtime.forward import choose_outputs
    from ..runtime.outputs import flatten

    assert ctx.inputs is not None and ctx.expected is not None and ctx.layout is not None
    session = ctx.session
    names = choose_outputs(session, ctx.layout, ctx.options.output)
    outputs = ctx.inputs.feed.outputs(session, ctx.inputs.raw)
    listed = ", ".join(f"{o.name!r} {list(o.shape)}" for o in session.get_outputs())
    if ctx.kind == "features":
        problem = ctx.layout.mismatch(outputs, names)
        if problem:
            raise OnnxFileError(f"{problem}. The file's outputs: {listed}. The file's outputs are matched to the "
                                "model's by order: name them in the model's order (output='A,B,C', "
                                "--onnx-parity-output=A,B,C), or check that the file was exported from this model.")
    actual = flatten(outputs)
    expected = ctx.expected
    if actual.shape != expected.shape:
        what = "logits" if ctx.kind == "logits" else ctx.kind
        raise OnnxFileError(
            f"the file's output {names[0]!r} gives shape {tuple(outputs[0].shape)}; torch's {what} have shape "
            f"{tuple(expected.shape)}. The file's outputs: {listed}. Name the {what} output (output=NAME, "
            "--onnx-parity-output NAME), or check that the file was exported from this model.")
    return actual


def check(ctx: CheckContext) -> CheckResult:
    from .arbitration import arbitrate
    from .conditioning import first_nonfinite_module
    from .output_kinds import compare_outputs, constant_output, file_constant

    assert ctx.inputs is not None and ctx.expected is not None and ctx.actual is not None and ctx.layout is not None
    expected, actual, layout = ctx.expected, ctx.actual, ctx.layout
    title = TITLES[layout.kind]
    cmp = compare_outputs(expected, actual, layout, ctx.logits_tolerance, precision=ctx.options.precision)
    details = {**cmp.to_dict(), "logit_rms": logit_rms(expected), "batch": int(expected.shape[0])}
    if layout.kind != "logits":
        details["output_kind"] = layout.kind
    if cmp.expected_nonfinite:
        where = first_nonfinite_module(ctx.model, ctx.inputs.x)
        details["first_nonfinite_module"] = where
        origin = f", first produced by module {where}" if where else ""
        own = "logits hold" if layout.kind == "logits" else "outputs hold"
        return CheckResult(
            "logits", "error",
            f"inconclusive: torch's own {own} NaN or Inf{origin}, so no comparison with them can pass or "
            "fail the export. Check the model with other weights (NAME=pretrained or NAME=/path/to/checkpoint) "
            f"or inputs.\n\n{cmp.message(title)}", details)
    constant = constant_output(expected, layout)
    if constant:
        return CheckResult("logits", "failed", constant, details)
    flat = file_constant(expected, actual, layout, ctx.runtime_info)
    if flat:
        return CheckResult("logits", "failed", f"{flat}\n\n{cmp.message(title)}", details)
    if not cmp.passed:
        seg, worst = cmp.worst()
        part = seg if len(layout.segments) > 1 else None
        verdict = arbitrate(ctx.model, ctx.inputs.x, worst.max_abs_diff, worst.atol, details, expected=expected,
                            seed=ctx.options.seed, part=part)
        if verdict is not None:
            return CheckResult("logits", "error", f"{verdict}\n\n{cmp.message(title)}", details)
    return CheckResult("logits", "passed" if cmp.passed else "failed", cmp.message(title), details)
