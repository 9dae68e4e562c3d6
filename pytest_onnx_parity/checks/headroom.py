"""The ``headroom`` check: how close each module's values come to float16's limits (:mod:`..layers.headroom`).

It measures, on the random batch's first sample and on the first :data:`PHOTOS` real photos (the bundled
ones, or ``--onnx-parity-images``), every module's largest magnitude on the torch side and on the file's
values, with what normalisations and Softmax compute inside, against float16's largest finite value
(65,504) and smallest normal (6.1e-5); docs/precision.md says how to read it.

* fp32 file: ``passed``; the message begins with ``warning:`` and names the modules within
  :data:`~..tolerances.FP16_HEADROOM_FACTOR` of overflow (``details["warnings"]``): what to keep in float32,
  or rescale, before anyone converts the file.
* fp16 file: ``failed`` when a float16 value of the file reaches 65,504 or a value holds Inf or NaN,
  naming the first module that yields Inf or NaN and the value and op; within the factor: a warning.
* int8: ``skipped``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import OnnxParityError
from ..results import CheckResult

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from .context import CheckContext

#: real photos measured (the first of the folder, in its order), and random samples
PHOTOS = 4
RANDOM_SAMPLES = 1


def check(ctx: CheckContext) -> CheckResult:
    from ..layers.headroom import measure_headroom

    precision = ctx.options.precision
    if precision == "int8":
        return CheckResult("headroom", "skipped", "not run: an int8 file keeps no float16 values to overflow")
    batches, labels = _batches(ctx)
    try:
        hr = measure_headroom(ctx.model, ctx.model_part or ctx.path, batches, precision=precision, labels=labels,
                              settings=ctx.settings)
    except OnnxParityError as exc:
        return CheckResult("headroom", "skipped", f"not measured: {exc}")
    return judge(hr)


def judge(hr: Any) -> CheckResult:
    """A :class:`~..layers.headroom.Headroom` as the check's result (see the module docstring)."""
    from ..tolerances import FP16_MAX, FP16_MIN_NORMAL

    fp16 = hr.precision == "fp16"
    details: dict[str, Any] = hr.to_dict()
    where = f"on {' and '.join(hr.batches)}"
    risk = [n for n in hr.at_risk if n not in hr.overflowed]
    details["warnings"] = [hr.describe(n) for n in risk]
    details["overflowed"] = [hr.describe(n) for n in hr.overflowed]
    details["underflow"] = {n: hr.modules[n].underflow for n in hr.underflowing}
    lines = []
    if hr.overflowed:
        lines.append(f"float16 overflow {where} in {len(hr.overflowed)} module(s):")
        lines += [f"  {d}" for d in details["overflowed"]]
    first = hr.first_nonfinite
    if first is not None:
        lines.append(f"first module that yields Inf or NaN: {first['module']} (value {first['output']!r} of "
                     f"{first['op']} node {first['node']!r}, {first['type']})")
    elif hr.overflowed:
        lines.append("a float16 value cannot hold these: they are Inf on a device that computes in float16 "
                     "(ONNX Runtime's CPU kernels compute many float16 ops in float32, which hides it here)")
    if hr.torch_first_nonfinite is not None:
        lines.append(f"torch's own float32 model yields Inf or NaN first in {hr.torch_first_nonfinite}")
    if risk:
        what = ("before converting this file to float16, keep them in float32 (to_fp16's keep_fp32_ops) or rescale"
                if not fp16 else "a deployment's inputs may go further")
        lines.append(f"warning: {len(risk)} module(s) {where} within {hr.factor:g}x of float16's largest finite "
                     f"value ({FP16_MAX:g}); {what}:")
        lines += [f"  {d}" for d in details["warnings"]]
    if hr.underflowing:
        lines.append(f"warning: {len(hr.underflowing)} module(s) whose whole value lies below float16's smallest "
                     f"normal ({FP16_MIN_NORMAL:.2g}; subnormal, fewer significant bits): "
                     + ", ".join(hr.underflowing[:8]))
    failed = fp16 and (bool(hr.overflowed) or first is not None)
    if not lines:
        top = hr.largest()
        lines.append(f"{len(hr.modules)} modules {where}, none within {hr.factor:g}x of float16's largest finite "
                     f"value ({FP16_MAX:g}); closest: {hr.describe(top) if top else 'nothing measured'}")
    elif not failed and not lines[0].startswith("warning:"):
        lines[0] = "warning: " + lines[0]
    return CheckResult("headroom", "failed" if failed else "passed", "\n".join(lines), details)


def _batches(ctx: CheckContext) -> tuple[list[np.ndarray], list[str]]:
    """The random batch's first samples and the first photos, each fitted to a fixed batch size of the file."""
    from ..errors import ImageError
    from ..preprocessing.dataconfig import sized_config
    from ..preprocessing.images import gate_image_paths, real_batch

    assert ctx.inputs is not None
    o = ctx.options
    out = [(ctx.inputs.x[:RANDOM_SAMPLES], "random sample")]
    try:
        paths = gate_image_paths(o.images)[:PHOTOS]
        out.append((real_batch(sized_config(ctx.model_config, o.image_size), paths, test_time=o.test_time)[0],
                    "real photo"))
    except ImageError:  # the real_images check says what is wrong with the folder
        pass
    fixed = ctx.inputs.fixed_batch
    if fixed:  # a file with a fixed batch size: repeat or cut each batch to it
        import numpy as np

        out = [(np.resize(x, (fixed, *x.shape[1:])).astype(x.dtype), what) for x, what in out]
    return [x for x, _ in out], [f"{min(len(x), fixed or len(x))} {what}{'s' if len(x) > 1 else ''}" for x, what in out]
