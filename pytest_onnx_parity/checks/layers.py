"""The ``layers`` check: the first torch module where ONNX Runtime departs from torch.

The comparison itself is :mod:`..layers` (one pass each side, the growth rule); this
module turns it into the check: too thin a comparison is skipped, a divergence goes to
float64 arbitration at that module.
"""
from __future__ import annotations

from typing import Any

from ..results import CheckResult
from .context import CheckContext


def check(ctx: CheckContext) -> CheckResult:
    from ..layers import compare_layers
    from ..layers.verdict import coverage, coverage_problem
    from ..tolerances import precision_layer_tolerance
    from .arbitration import arbitrate

    assert ctx.inputs is not None
    o, x = ctx.options, ctx.inputs.x
    kwargs: dict[str, Any] = {}
    if o.layer_memory is not None:
        kwargs["memory_budget"] = o.layer_memory
    kwargs.update(precision_layer_tolerance(o.precision) if o.atol is None else {})
    cmp = compare_layers(ctx.model, ctx.model_part or ctx.path, x[:1], **kwargs)
    details: dict[str, Any] = cmp.to_dict()
    compared, comparable = coverage(len(cmp.layers), cmp.uncompared)
    details["coverage"] = {"compared": compared, "comparable": comparable}
    result = CheckResult("layers", "passed", "", details)
    result.comparison = cmp  # type: ignore[attr-defined]  # the run keeps it (ParityResult.layer_comparison)
    first = cmp.first_divergence
    if first is None:
        thin = coverage_problem(len(cmp.layers), cmp.uncompared, cmp.note)
        if thin:
            result.status, result.message = "skipped", f"not judged: {thin}"
            return result
        result.message = f"{compared} of {comparable} computing modules compared, no divergence"
        if comparable > compared:
            result.message += f"; {comparable - compared} could not be compared (see details)"
        return result
    details["first_divergence"] = first.name
    text = f"{cmp.summary()}\n{cmp.table()}"
    verdict = arbitrate(ctx.model, x[:1], first.max_abs_diff, first.tolerance, details, module=first.name)
    if verdict is not None:
        result.status, result.message = "error", f"{verdict}\n\n{text}"
        return result
    result.status = "failed"
    result.message = f"{text}\n{details['float64']['where']}: ONNX Runtime's error is well beyond torch float32's own (float64 check)"
    return result
