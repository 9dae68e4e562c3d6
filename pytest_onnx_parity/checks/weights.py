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
        cmp = compare_weights(ctx.loaded, ctx.path)
    except OnnxParityError as exc:
        return CheckResult("weights", "error", str(exc))
    d = cmp.to_dict()
    details = {k: v for k, v in d.items() if k not in ("name", "status", "message")}
    message = cmp.message
    if cmp.status == "failed":
        other = other_weight_set(ctx)
        if other is not None:
            details["file_holds"] = other
            message = other_set_message(ctx, other) + "\n\n" + message
    return CheckResult("weights", cmp.status, message, details)


def other_weight_set(ctx: CheckContext) -> str | None:
    """The other weight set of the model's train.py checkpoint (EMA or not) when the file holds that one."""
    import copy

    from ..model.checkpoint import other_state_dict
    from .weightmatch import compare_weights

    ckpt = ctx.record.checkpoint
    if ckpt is None or ckpt.other_set is None:
        return None
    state = other_state_dict(ckpt)
    twin = copy.deepcopy(ctx.model)
    try:
        twin.load_state_dict(state, strict=not ctx.record.dropped_keys)
        held = compare_weights(twin, ctx.path).status == "passed"
    except (OnnxParityError, RuntimeError):
        return None
    return ckpt.other_set if held else None


def other_set_message(ctx: CheckContext, other: str) -> str:
    from ..axes import WEIGHT_SETS

    ckpt = ctx.record.checkpoint
    assert ckpt is not None
    pick = WEIGHT_SETS[0] if "ema" in other else WEIGHT_SETS[1]
    return (f"The file holds the checkpoint's {other} weights; the model was built from its {ckpt.weight_set} "
            f"(the EMA weights when a train.py checkpoint holds them, as timm.create_model(checkpoint_path=) loads). "
            f"To check the file against the weights it holds: --onnx-parity-weight-set {pick} "
            f"(weight_set='{pick}' in check_parity; onnx-parity check --weight-set {pick}).")


def point_at_weights(checks: list[CheckResult]) -> None:
    """When the weights check failed, the behaviour checks' failures say so first (not "loosen a tolerance")."""
    weights = next((c for c in checks if c.name == "weights"), None)
    if weights is None or weights.status != "failed":
        return
    for c in checks:
        if c.name in BEHAVIOUR_CHECKS and c.status == "failed":
            c.message = ("The weights check failed: the file's weights differ from the model's, so this difference "
                         "is expected and no tolerance fixes it; fix the weights first (see weights).\n" + c.message)
