"""The ``weights`` check, first of every result: does the file hold the model's weights?

The matching itself (which file tensor is which weight, in the forms an exporter may write)
is :mod:`.weightmatch`; this module turns it into the check, and words what a failed
weights check means for the checks after it.
"""
from __future__ import annotations

from ..errors import OnnxParityError
from ..results import CheckResult
from .context import CheckContext

#: the checks whose failure a failed weights check explains
BEHAVIOUR_CHECKS = ("logits", "topk", "batch_consistency", "real_images", "layers")


def check(ctx: CheckContext) -> CheckResult:
    from .weightmatch import compare_weights

    try:
        cmp = compare_weights(ctx.model, ctx.path)
    except OnnxParityError as exc:
        return CheckResult("weights", "error", str(exc))
    d = cmp.to_dict()
    details = {k: v for k, v in d.items() if k not in ("name", "status", "message")}
    return CheckResult("weights", cmp.status, cmp.message, details)


def point_at_weights(checks: list[CheckResult]) -> None:
    """When the weights check failed, the behaviour checks' failures say so first (not "loosen a tolerance")."""
    weights = next((c for c in checks if c.name == "weights"), None)
    if weights is None or weights.status != "failed":
        return
    for c in checks:
        if c.name in BEHAVIOUR_CHECKS and c.status == "failed":
            c.message = ("The weights check failed: the file's weights differ from the model's, so this difference "
                         "is expected and no tolerance fixes it; fix the weights first (see weights).\n" + c.message)
