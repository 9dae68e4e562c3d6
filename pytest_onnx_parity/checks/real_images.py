"""End-to-end checks on real images: the deployment's preprocessing, not only the graph.

Torch side: timm's own eval transform of the model's resolved data config and the torch model. File
side: a preprocessor (:mod:`.photos`: the file's metadata through :func:`preprocess`, the file's own
preprocessing graph, or the deployment's own code) and the variant's runtime. So a file whose metadata
prescribes other preprocessing than the model was trained with fails here even when the graph is perfect.

The verdict, on any folder: the outputs of the first photos (:data:`~.accuracy.KEEP_IMAGES`) within the
end-to-end tolerance and their top-k classes, and top-1 agreement over every photo. On a labelled folder
(:mod:`..preprocessing.labels`) both sides' accuracies are added, and the file fails when its top-1 differs
from torch's by more than ``max_accuracy_drop`` percentage points either way: accuracy adds to the
comparison, it never replaces it. An embedding or features have no classes: each output is compared
within its end-to-end tolerance, an embedding also by cosine and nearest neighbours
(:func:`.output_kinds.judge_real_images`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import OnnxParityError
from ..results import CheckResult
from .photos import timm_eval_transform  # noqa: F401 - where callers have always found it

if TYPE_CHECKING:  # pragma: no cover
    from ..preprocessing.labels import Labels, Unlabelled
    from .accuracy import PhotoTally
    from .context import CheckContext
    from .photos import Preprocessor

def check(ctx: "CheckContext") -> CheckResult:
    """The real_images check of a run: the int8 verdict (:mod:`.int8`) for an int8 file, else end to end."""
    o = ctx.options
    if not o.real_images:
        return CheckResult("real_images", "skipped", "real-image check turned off")
    deployment = (o.preprocess or "metadata") != "metadata"
    if ctx.given_file and not ctx.export.data_config and not ctx.embedded and not deployment:
        return CheckResult("real_images", "skipped", "not run: the file carries no data config, so nothing says "
                           "how to preprocess a photo for it (see data_config)")
    from .photos import preprocessor_for

    try:
        pre = preprocessor_for(ctx)
    except OnnxParityError as exc:
        return CheckResult("real_images", "failed" if not deployment else "error",
                           f"the file's side cannot preprocess: {exc}")
    if o.precision == "int8":
        from .int8 import check as check_int8

        return check_int8(ctx, pre)
    return check_real_images(ctx, pre)


def check_real_images(ctx: "CheckContext", pre: "Preprocessor") -> CheckResult:
    from .photos import ShapeMismatch, photo_set, stream

    o = ctx.options
    found = photo_set(ctx)
    source = str(o.images) if o.images else "bundled sample photos"
    try:
        tally, layout, _ = stream(ctx, pre, found)
    except ShapeMismatch as exc:
        return CheckResult("real_images", "error", (
            f"the two preprocessing paths give inputs of different shapes: timm's transform {exc.torch_shape[1:]}, "
            f"{exc.describe} {exc.fed_shape[1:]}, so no pixel or logit can be compared. The file's data config differs "
            "from the model's (see the data_config check); fix it with onnx-parity stamp."),
            {"torch_input_shape": list(exc.torch_shape), "onnx_input_shape": list(exc.fed_shape)})
    if tally.images == 0 or layout is None:
        return CheckResult("real_images", "skipped", f"no images to compare in {source}")
    head = f"{tally.images} real images end to end ({pre.describe})"
    if layout.kind != "logits":  # an embedding or features: each output, no classes
        from .output_kinds import judge_real_images

        return judge_real_images(ctx.model, tally.kept_expected, tally.kept_actual, tally.first_x, layout,
                                 lambda e: ctx.logits_tolerance(e, end_to_end=True), o, images=tally.images, source=source,
                                 max_pix=tally.max_input_diff, labelled=_is_labelled(found), head=head)
    return judge_logits(ctx, tally, found, head=head, source=source)


def _is_labelled(found: Any) -> bool:
    from ..preprocessing.labels import Labels

    return isinstance(found, Labels)


def judge_logits(ctx: "CheckContext", tally: "PhotoTally", found: "Labels | Unlabelled", *, head: str,
                 source: str) -> CheckResult:
    """A classifier's verdict on the photos: logits and top-k of the kept photos, top-1 over every photo, then
    accuracy on a labelled folder."""
    from ..compare import compare_logits, compare_topk
    from ..runtime.outputs import label_names

    o = ctx.options
    e_all, a_all = tally.expected, tally.actual
    tol = ctx.logits_tolerance(e_all, end_to_end=True)
    atol, rtol = tol.atol, tol.rtol
    logits_cmp = compare_logits(e_all, a_all, tolerance=tol)
    topk_cmp = compare_topk(e_all, a_all, k=min(o.topk, e_all.shape[-1]), tolerance=tol,
                            min_agreement=o.min_agreement, labels=label_names(ctx.model, e_all.shape[-1]))
    top1 = tally.top1(atol, rtol)
    pix = tally.max_input_diff
    details: dict[str, Any] = {"images": tally.images, "source": source, "max_abs_diff": logits_cmp.max_abs_diff,
                               "top1_agreement": top1["exact"], "top1_agreement_with_ties": top1["agreement"],
                               "max_input_diff": pix, "atol": atol, "rtol": rtol, "compared_images": len(e_all),
                               "preprocess": pre_name(o)}
    if tally.sizes:  # raw photos of these sizes through the file's own preprocessing graph
        details.update(distinct_sizes=len(tally.sizes), preprocessing="embedded")
    failures = []
    if not logits_cmp.passed:
        failures.append(logits_cmp.message(f"Logits on {len(e_all)} real images differ end to end (torch: timm's "
                                           f"transform; the file: {head.split('(', 1)[-1].rstrip(')')})!"))
    if not topk_cmp.passed:
        failures.append(topk_cmp.message())
    if top1["images"] > len(e_all) and top1["agreement"] < o.min_agreement - 1e-12:
        failures.append(f"top-1 agreement over all {top1['images']} photos is {top1['agreement']:.1%} (near ties "
                        f"counted as agreeing), below the {o.min_agreement:.1%} required; photos that differ: "
                        f"{', '.join(str(i) for i in top1['disagreements'][:10])}")
    acc_line = _accuracy(ctx, tally, found, details, failures)
    if logits_cmp.expected_nonfinite:
        return CheckResult("real_images", "error", "inconclusive: torch's own logits on the real images hold NaN or Inf, "
                           "so no comparison with them can pass or fail the export.\n" + logits_cmp.message(), details)
    if failures and tally.first_x is not None and pix is not None and pix < 1e-3:
        # same pixels on both sides, different logits: is torch itself that unstable here?
        from .arbitration import arbitrate

        delta = float(np.abs(tally.kept_actual[0].astype(np.float64) - tally.kept_expected[0]).max())
        verdict = arbitrate(ctx.model, tally.first_x, delta, float(atol), details, expected=tally.kept_expected[0],
                            seed=o.seed, inputs_note=f"the inputs agree (max input diff {pix:.2g}) and ")
        if verdict is not None:
            return CheckResult("real_images", "error", verdict + "\n" + "\n".join(failures), details)
    shown_pix = f", max input diff {pix:.2g}" if pix is not None else ""
    line = (f"{head}: top-1 agreement {top1['exact']:.1%}, max logit diff {logits_cmp.max_abs_diff:.3g}{shown_pix}")
    msg = "\n".join([line] + ([acc_line] if acc_line else []) + failures)
    return CheckResult("real_images", "failed" if failures else "passed", msg, details)


def pre_name(options: Any) -> str:
    return "embedded" if options.embed_preprocessing and (options.preprocess or "metadata") == "metadata" \
        else (options.preprocess or "metadata")


def _accuracy(ctx: "CheckContext", tally: "PhotoTally", found: "Labels | Unlabelled", details: dict[str, Any],
              failures: list[str]) -> str:
    """The accuracy line of a labelled folder (or why accuracy was not judged); an accuracy failure is added."""
    from ..preprocessing.labels import Labels
    from .accuracy import accuracy_problem, vacuous_accuracy

    o = ctx.options
    if not isinstance(found, Labels):
        details["accuracy_judged"] = False
        details["accuracy_not_judged"] = found.why
        return f"accuracy not judged: {found.why}" if o.images else ""
    acc = tally.accuracy()
    drop = acc["torch_top1"] - acc["onnx_top1"]
    details.update(acc, top1_drop_pp=drop, max_accuracy_drop_pp=o.max_accuracy_drop, labels_rule=found.rule)
    line = (f"accuracy on {tally.images} labelled images ({found.rule}): torch top-1 {acc['torch_top1']:.3f}% / top-5 "
            f"{acc['torch_top5']:.3f}%, ONNX top-1 {acc['onnx_top1']:.3f}% / top-5 {acc['onnx_top5']:.3f}%, drop "
            f"{drop:.3f} pp (at most {o.max_accuracy_drop:g} allowed either way; --onnx-parity-max-accuracy-drop)")
    vacuous = vacuous_accuracy(ctx.random_weights, acc["torch_top1"], o.max_accuracy_drop)
    if vacuous:
        details["accuracy_judged"] = False
        details["accuracy_not_judged"] = vacuous
        return line + f"\naccuracy not judged: {vacuous}"
    details["accuracy_judged"] = True
    problem = accuracy_problem(acc["torch_top1"], acc["onnx_top1"], o.max_accuracy_drop)
    if problem:
        failures.append(problem)
    return line


