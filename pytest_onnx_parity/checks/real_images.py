"""End-to-end checks on real images: the deployment's preprocessing, not only the graph.

Torch side: timm's own eval transform (``timm.data.create_transform`` of the
model's resolved data config) and the torch model. ONNX side: :func:`preprocess`
driven by the ONNX file's own metadata and ONNX Runtime. So a file whose
metadata prescribes other preprocessing than the model was trained with fails
here even when the graph is perfect.

On a labelled ImageFolder tree (class folders named by ImageNet synset or class
index) both sides' top-1/top-5 accuracies are computed, streaming batches, and
the check fails when ONNX is worse by more than ``max_accuracy_drop``
percentage points. An embedding or features (:mod:`..runtime.outputs`) have no classes:
each output is compared within its end-to-end tolerance, an embedding also by cosine and
nearest neighbours over the photos (:func:`.kinds.judge_real_images`).
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ..errors import OnnxParityError
from ..results import CheckResult
from ..runtime.forward import ort_forward, torch_forward_layout
from ..tolerances import E2E_ATOL_FACTOR, E2E_RTOL, logit_rms

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime
    import torch

    from ..options import ParityOptions
    from .context import CheckContext

BATCH = 16
PROGRESS_EVERY_S = 10.0


def check(ctx: "CheckContext") -> CheckResult:
    """The real_images check of a run, by variant: raw photos through a file with embedded preprocessing
    (:func:`check_real_images_embedded`), the int8 verdict (:mod:`.int8`), or the end to end check
    (:func:`check_real_images`)."""
    o = ctx.options
    if not o.real_images:
        return CheckResult("real_images", "skipped", "real-image check turned off")
    if ctx.given_file and not ctx.export.data_config:
        return CheckResult("real_images", "skipped", "not run: the file carries no data config, so nothing says "
                           "how to preprocess a photo for it (see data_config)")
    if ctx.embedded:
        return check_real_images_embedded(ctx.model, ctx.session, o)
    if o.precision == "int8":
        from .int8 import check as check_int8

        return check_int8(ctx)
    return check_real_images(ctx.model, ctx.path, ctx.session, o, ctx.progress)


def timm_eval_transform(model: "torch.nn.Module", test_time: bool = False,
                        image_size: int | None = None) -> Callable[[Any], "torch.Tensor"]:
    import timm.data

    from ..preprocessing.dataconfig import DATA_CONFIG_FIELDS, apply_test_time, resolve_data_config, sized_config

    cfg = resolve_data_config(model)
    if test_time:
        cfg = apply_test_time(cfg)
    cfg = sized_config(cfg, image_size)
    return timm.data.create_transform(**{k: (tuple(cfg[k]) if isinstance(cfg[k], list) else cfg[k]) for k in DATA_CONFIG_FIELDS},
                                      is_training=False)


def e2e_tolerance(expected: np.ndarray, options: "ParityOptions") -> tuple[float, float, str]:
    """``(atol, rtol, source)`` of the end-to-end logits: given, or the end-to-end default widened to the
    precision's own profile for fp16 files (source empty when given)."""
    from ..tolerances import precision_logits_tolerance

    if options.atol is not None:
        return options.atol, options.rtol, ""  # type: ignore[return-value]
    scale = logit_rms(expected)  # of the finite values: float32 torch itself may overflow
    atol, rtol = E2E_ATOL_FACTOR * scale, E2E_RTOL
    source = f"end-to-end default: {E2E_ATOL_FACTOR:g} x logit RMS {scale:.3g}"
    pair = precision_logits_tolerance(options.precision, expected) if options.precision == "fp16" else None
    if pair is not None and pair[0] > atol:
        atol, rtol = pair[0], max(rtol, pair[1])
        source = f"{options.precision} profile (tolerances.py), logit RMS {scale:.3g}"
    return atol, rtol, source


class _Streams:
    """Decode each image once and run both preprocessing paths on worker threads."""

    def __init__(self, model: Any, onnx_path: Path, test_time: bool, image_size: int | None = None) -> None:
        from ..onnxfile.metadata import read_data_config
        from ..preprocessing.dataconfig import sized_config
        from ..preprocessing.images import model_image_mode
        from ..preprocessing.transform import EvalTransform

        self.torch_tf = timm_eval_transform(model, test_time, image_size)
        self.mode = model_image_mode(model)  # timm's input_img_mode: "L" for a 1-channel model
        config = str(onnx_path) if image_size is None else sized_config(read_data_config(onnx_path, test_time=test_time), image_size)
        self.onnx_tf = EvalTransform.from_config(config, test_time=test_time and image_size is None)

    def one(self, path: Path) -> tuple[np.ndarray, np.ndarray] | str:
        from ..errors import ImageError
        from ..preprocessing.decode import open_image

        try:
            img = open_image(path, self.mode)
        except ImageError as exc:
            return str(exc)
        return self.torch_tf(img).numpy(), self.onnx_tf(img)


def _batches(streams: _Streams, paths: Sequence[Path], workers: int) -> Any:
    from ..errors import ImageError
    from ..preprocessing.imagefiles import bad_files_message

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(paths), BATCH):
            chunk = list(paths[start:start + BATCH])
            out = list(pool.map(streams.one, chunk))
            bad = [o for o in out if isinstance(o, str)]
            if bad:
                raise ImageError(bad_files_message(bad))
            yield chunk, np.stack([o[0] for o in out]), np.stack([o[1] for o in out])  # type: ignore[index]


def check_real_images(model: Any, onnx_path: Path, session: "onnxruntime.InferenceSession",
                      options: "ParityOptions", progress: Callable[[str], None] | None = None) -> CheckResult:
    from ..compare import compare_logits, compare_topk
    from ..preprocessing.images import gate_image_paths, labelled_folder
    from ..runtime.outputs import label_names

    progress = progress or (lambda msg: None)
    folder = options.images
    labelled = labelled_folder(folder) if folder else None
    paths = [p for p, _ in labelled] if labelled else gate_image_paths(folder)
    labels = np.asarray([y for _, y in labelled], dtype=np.int64) if labelled else None
    try:
        streams = _Streams(model, Path(onnx_path), options.test_time, options.image_size)
    except OnnxParityError as exc:
        return CheckResult("real_images", "failed", f"the ONNX side cannot preprocess: {exc}")
    workers = min(4, os.cpu_count() or 1)
    max_pix = 0.0
    hits = {"torch": np.zeros(2), "onnx": np.zeros(2)}
    last = time.perf_counter()
    done = 0
    keep = labels is None  # plain folders keep all logits; labelled trees stream
    e_list: list[np.ndarray] = []
    a_list: list[np.ndarray] = []
    agree_top1 = 0
    first_x: np.ndarray | None = None
    layout = None  # the output kind (runtime/outputs.py), from the first batch
    for chunk, x_t, x_o in _batches(streams, paths, workers):
        if first_x is None:
            first_x = x_t
        if x_t.shape != x_o.shape:
            return CheckResult("real_images", "error", (
                f"the two preprocessing paths give inputs of different shapes: timm's transform {tuple(x_t.shape[1:])}, "
                f"the file's metadata + preprocess {tuple(x_o.shape[1:])}, so no pixel or logit can be compared. The file's "
                "data config differs from the model's (see the data_config check); fix it with onnx-parity stamp."),
                {"torch_input_shape": list(x_t.shape), "onnx_input_shape": list(x_o.shape)})
        max_pix = max(max_pix, float(np.abs(x_t - x_o).max()))
        e, layout = torch_forward_layout(model, x_t)
        a = ort_forward(session, x_o)
        agree_top1 += int((e.argmax(-1) == a.argmax(-1)).sum())
        if labels is not None and layout.kind == "logits":
            y = labels[done:done + len(chunk)]
            for side, logits in (("torch", e), ("onnx", a)):
                top5 = np.argsort(-logits, axis=-1)[:, :5]
                hits[side][0] += float((top5[:, 0] == y).sum())
                hits[side][1] += float((top5 == y[:, None]).any(-1).sum())
        if keep or len(e_list) < 8:
            e_list.append(e)
            a_list.append(a)
        done += len(chunk)
        if time.perf_counter() - last > PROGRESS_EVERY_S:
            progress(f"real images {done}/{len(paths)}")
            last = time.perf_counter()
    if done == 0:
        return CheckResult("real_images", "skipped", f"no images to compare in {folder or 'the bundled photos'}")
    if layout is not None and layout.kind != "logits":  # an embedding or features: each output, no classes
        from .kinds import judge_real_images

        return judge_real_images(model, e_list, a_list, first_x, layout, lambda e: e2e_tolerance(e, options), options,
                                 images=len(paths), source=str(folder) if folder else "bundled sample photos",
                                 max_pix=max_pix, labelled=labels is not None,
                                 head=f"{len(paths)} real images end to end")
    e_all, a_all = np.concatenate(e_list), np.concatenate(a_list)
    atol, rtol, source = e2e_tolerance(e_all, options)
    logits_cmp = compare_logits(e_all, a_all, atol=atol, rtol=rtol)
    if source:
        logits_cmp.tolerance_source = source
    topk_cmp = compare_topk(e_all, a_all, k=min(options.topk, e_all.shape[-1]), atol=atol, rtol=rtol,
                            min_agreement=options.min_agreement, labels=label_names(model, e_all.shape[-1]))
    n = len(paths)
    details: dict[str, Any] = {
        "images": n, "source": str(folder) if folder else "bundled sample photos",
        "max_abs_diff": logits_cmp.max_abs_diff, "top1_agreement": agree_top1 / done,
        "max_input_diff": max_pix, "atol": atol, "rtol": rtol,
    }
    failures = []
    acc_line = ""
    if labels is not None:
        acc = {side: (100 * hits[side][0] / n, 100 * hits[side][1] / n) for side in hits}
        drop = acc["torch"][0] - acc["onnx"][0]
        details.update({"torch_top1": acc["torch"][0], "torch_top5": acc["torch"][1], "onnx_top1": acc["onnx"][0],
                        "onnx_top5": acc["onnx"][1], "top1_drop_pp": drop, "max_accuracy_drop_pp": options.max_accuracy_drop})
        acc_line = (f"accuracy on {n} labelled images: torch top-1 {acc['torch'][0]:.3f}% / top-5 {acc['torch'][1]:.3f}%, "
                    f"ONNX top-1 {acc['onnx'][0]:.3f}% / top-5 {acc['onnx'][1]:.3f}%, drop {drop:.3f} pp "
                    f"(at most {options.max_accuracy_drop:g} allowed; --onnx-parity-max-accuracy-drop)")
        vacuous = _vacuous_accuracy(model, acc["torch"][0], options.max_accuracy_drop)
        if vacuous:
            # the accuracy verdict cannot fail here: judge the logits on the images kept instead
            details["accuracy_judged"] = False
            acc_line += f"\naccuracy not judged: {vacuous}; the logits on the first {len(e_all)} images are compared instead"
            labels = None
        elif drop > options.max_accuracy_drop + 1e-9:
            failures.append(acc_line)
    if labels is None:
        if not logits_cmp.passed:
            failures.append(logits_cmp.message(
                f"Logits on {len(e_all)} real images differ end to end (torch: timm's transform; ONNX: the file's metadata + preprocess)!"))
        if not topk_cmp.passed:
            failures.append(topk_cmp.message())
    if logits_cmp.expected_nonfinite:
        return CheckResult("real_images", "error", "inconclusive: torch's own logits on the real images hold NaN or Inf, "
                           "so no comparison with them can pass or fail the export.\n" + logits_cmp.message(), details)
    if failures and labels is None and first_x is not None and max_pix < 1e-3:
        # same pixels on both sides, different logits: is torch itself that unstable here?
        from .arbitration import arbitrate

        delta = float(np.abs(a_list[0].astype(np.float64) - e_list[0]).max())
        verdict = arbitrate(model, first_x, delta, float(atol), details, expected=e_list[0], seed=options.seed,
                            inputs_note=f"the inputs agree (max input diff {max_pix:.2g}) and ")
        if verdict is not None:
            return CheckResult("real_images", "error", verdict + "\n" + "\n".join(failures), details)
    head = (f"{n} real images end to end: top-1 agreement {details['top1_agreement']:.1%}, "
            f"max logit diff {logits_cmp.max_abs_diff:.3g}, max input diff {max_pix:.2g}")
    msg = "\n".join([head] + ([acc_line] if acc_line else []) + failures)
    return CheckResult("real_images", "failed" if failures else "passed", msg, details)


def _vacuous_accuracy(model: Any, torch_top1: float, max_drop: float) -> str | None:
    """Why an accuracy-drop verdict on a labelled folder could not fail, or None when it can.

    ONNX can be worse than torch by at most torch's own top-1; with random weights
    both sides score at chance, whatever the export does.
    """
    spec = getattr(model, "onnx_parity_spec", None)
    if spec is not None and spec.weights_kind == "random":
        return "random weights score at chance on both sides, so a drop in accuracy means nothing"
    if torch_top1 <= max_drop:
        return (f"torch's own top-1 is {torch_top1:.3f}%, not above the allowed drop ({max_drop:g} pp), so ONNX "
                "could not fall further (do the labels match the model's classes?)")
    return None


def check_real_images_embedded(model: "torch.nn.Module", session: "onnxruntime.InferenceSession",
                               options: "ParityOptions") -> CheckResult:
    """Photos of different sizes through one session against torch on timm's transform of the same photos."""
    from ..compare import compare_logits, compare_topk
    from ..preprocessing.images import gate_image_paths, load_images, model_image_mode
    from ..runtime.feeds import embedded_outputs
    from ..runtime.outputs import flatten, label_names

    paths: Sequence[Path] = gate_image_paths(options.images)
    images = load_images(paths)  # decoded as timm's loader does; every unreadable file named in one ImageError
    if not images:
        return CheckResult("real_images", "skipped", "no images to compare")
    tf = timm_eval_transform(model, options.test_time)
    mode = model_image_mode(model)  # the torch side decodes as timm's loader does ("L": 1 channel); the graph takes RGB
    x = np.stack([tf(im).numpy() for im in (images if mode == "RGB" else load_images(paths, mode))])
    runs = [torch_forward_layout(model, x[i:i + 16]) for i in range(0, len(x), 16)]
    e, layout = np.concatenate([r[0] for r in runs]), runs[0][1]
    a = flatten(embedded_outputs(session, images))  # every output the run chose (the logits of a classifier)
    sizes = sorted({im.size for im in images})
    if layout.kind != "logits":  # an embedding or features: each output, no classes
        from .kinds import judge_real_images

        return judge_real_images(model, [e], [a], None, layout, lambda t: e2e_tolerance(t, options), options,
                                 images=len(images), source=str(options.images or "bundled sample photos"),
                                 max_pix=None, labelled=False, head=f"{len(images)} real images of {len(sizes)} sizes "
                                 "as raw pixels through one session (preprocessing in the graph) against torch on "
                                 "timm's transform")
    atol, rtol, _ = e2e_tolerance(e, options)
    logits_cmp = compare_logits(e, a, atol=atol, rtol=rtol)
    if logits_cmp.expected_nonfinite:
        return CheckResult("real_images", "error", "inconclusive: torch's own logits on the real images hold NaN or Inf, "
                           "so no comparison with them can pass or fail the export.\n" + logits_cmp.message())
    topk_cmp = compare_topk(e, a, k=min(options.topk, e.shape[-1]), atol=atol, rtol=rtol, min_agreement=options.min_agreement,
                            labels=label_names(model, e.shape[-1]))
    n = len(images)
    agree = float((e.argmax(-1) == a.argmax(-1)).mean())
    details = {"images": n, "distinct_sizes": len(sizes), "source": str(options.images or "bundled sample photos"),
               "max_abs_diff": logits_cmp.max_abs_diff, "top1_agreement": agree, "atol": atol, "rtol": rtol,
               "preprocessing": "embedded"}
    head = (f"{n} real images of {len(sizes)} sizes as raw pixels through one session (preprocessing in the graph) "
            f"against torch on timm's transform: top-1 agreement {agree:.1%}, max logit diff {logits_cmp.max_abs_diff:.3g}")
    failures = []
    if not logits_cmp.passed:
        failures.append(logits_cmp.message("Logits on real images differ (embedded preprocessing against timm's transform)!"))
    if not topk_cmp.passed:
        failures.append(topk_cmp.message())
    return CheckResult("real_images", "failed" if failures else "passed", "\n".join([head, *failures]), details)
