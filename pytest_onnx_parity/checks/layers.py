"""The ``layers`` check: the first torch module where ONNX Runtime departs from torch.

The comparison itself is :mod:`..layers` (one pass each side, the growth rule); this
module turns it into the check: too thin a comparison is skipped, a divergence goes to
float64 arbitration at that module. A divergence that stands is then isolated
(:func:`..layers.repro.isolate_divergence`): the module cut out of the file and run alone on
torch's inputs, and who to blame (exporter, runtime or simplifier), in the message and in
``details["blame"]`` / ``details["module_repro"]``.
"""
from __future__ import annotations

from typing import Any

from ..errors import OnnxParityError
from ..results import CheckResult
from .context import CheckContext


def check(ctx: CheckContext) -> CheckResult:
    from ..layers import compare_layers
    from ..layers.verdict import coverage, coverage_problem
    from ..tolerances import layer_tolerance
    from .arbitration import arbitrate

    assert ctx.inputs is not None
    o, x = ctx.options, ctx.inputs.x
    kwargs: dict[str, Any] = {}
    if o.layer_memory is not None:
        kwargs["memory_budget"] = o.layer_memory
    if o.atol is None:  # the judged precision's profile; a given atol/rtol is the logits', not the layers'
        kwargs.update(layer_tolerance(precision=ctx.judged_precision).layer_kwargs())
    try:
        cmp = compare_layers(ctx.model, ctx.model_part or ctx.path, x[:1], settings=ctx.settings, **kwargs)
    except OnnxParityError as exc:
        if ctx.settings.is_default:
            raise
        return CheckResult("layers", "skipped", f"not run on {ctx.options.runtime} ({ctx.options.provider}): the per-layer "
                           f"pass could not run there, and a diagnosis on another runtime would not be this one's: {exc}")
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
    if o.precision == "int8":
        return _int8(cmp, result, details)
    details["first_divergence"] = first.name
    text = f"{cmp.summary()}\n{cmp.table()}"
    verdict = arbitrate(ctx.model, x[:1], first.max_abs_diff, first.tolerance, details, module=first.name)
    if verdict is not None:
        result.status, result.message = "error", f"{verdict}\n\n{text}"
        return result
    result.status = "failed"
    result.message = f"{text}\n{details['float64']['where']}: ONNX Runtime's error is well beyond torch float32's own (float64 check)"
    isolation = _isolate(ctx, cmp, x[:1], details)
    if isolation is not None:
        result.message += "\n" + isolation.message()
        result.isolation = isolation  # what a reproducer bundle writes out
    return result


#: the modules an int8 failure names, worst first
INT8_WORST_SHOWN = 5


def _int8(cmp: Any, result: CheckResult, details: dict[str, Any]) -> CheckResult:
    """An int8 file whose modules quantise beyond the int8 per-layer tolerance: the worst of them by own error
    (what each module's int8 nodes get wrong on torch's float inputs, its output's quantisation included), and
    the ``nodes_to_exclude`` list that leaves them in float. No float64 arbitration and no module cut: whole
    quantisation steps are the file's design, not float rounding, and no exporter is to blame."""
    failing = sorted(cmp.failed, key=lambda layer: layer.ratio, reverse=True)
    exclude = list(dict.fromkeys(node for layer in failing for node in layer.own_nodes))
    details["first_divergence"] = cmp.first_divergence.name
    details["worst_quantised"] = [{"name": layer.name, "own_rel": layer.own_rel, "nodes": list(layer.own_nodes)}
                                  for layer in failing]
    details["nodes_to_exclude"] = exclude
    worst = "; ".join(f"{layer.name} ({layer.module_type}): own error {layer.own_rel:.2f} x its RMS"
                      for layer in failing[:INT8_WORST_SHOWN])
    more = f" and {len(failing) - INT8_WORST_SHOWN} more" if len(failing) > INT8_WORST_SHOWN else ""
    result.status = "failed"
    result.message = (
        f"{len(failing)} of {len(cmp.layers)} modules quantise beyond the int8 per-layer tolerance (own error above "
        f"{cmp.rtol:g} x RMS; worst first): {worst}{more}.\nTo keep them in float, quantise again with "
        f"nodes_to_exclude={exclude!r} (onnxruntime.quantization.quantize_static, or "
        f"pytest_onnx_parity.onnxfile.quantize.to_int8).\n\n{cmp.table(max_rows=12)}")
    return result


def _isolate(ctx: CheckContext, cmp: Any, x: Any, details: dict[str, Any]) -> Any:
    """The divergent module cut out and blamed (layers/repro.py): its line for the message, its figures in
    ``details`` (``blame``: the verdict, ``module_repro``: the cut, the figures, the reduction). An aid: a
    module that cannot be cut is said in ``details`` and never changes the verdict."""
    from ..layers.repro import isolate_divergence

    exporter = getattr(ctx.export, "exporter", None) or (cmp.exporter if cmp.exporter != "unknown" else None)
    try:
        isolation = isolate_divergence(ctx.model, ctx.model_part or ctx.path, x, cmp, exporter=exporter,
                                       level=ctx.options.ort_opt, unsimplified=ctx.unsimplified, settings=ctx.settings)
    except Exception as exc:  # noqa: BLE001 - the verdict stands without the reproducer
        details["module_repro"] = {"problem": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
        return None
    details["blame"] = isolation.blame.verdict
    details["module_repro"] = isolation.to_dict()
    return isolation
