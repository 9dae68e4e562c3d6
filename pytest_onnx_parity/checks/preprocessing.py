"""The ``preprocessing`` check: the deployment's own preprocessing against timm's eval transform.

``--onnx-parity-preprocess SPEC`` names the preprocessing a deployment runs (:mod:`..preprocessing.deploy`).
Its tensors of the gate's photos are compared with timm's eval transform of the model's own data config
(:func:`~..preprocessing.diagnose.compare_preprocessing`: differences in input units and 8-bit levels, and
the diagnosis), and both tensor sets are run through the file (the effect: logit difference over the logit
RMS, top-1 agreement).

The verdict: a data-config mismatch (mean/std, channel order, layout, scale, size, crop, grayscale) fails
whatever the logits do; a library difference (resize kernel, antialiasing, resize library, colour profile,
EXIF) or a difference no candidate explains fails only when its effect through the file exceeds
``preprocess_max_logit_effect`` x logit RMS or the top-1 agreement falls below ``preprocess_min_top1``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import OnnxParityError
from ..results import CheckResult
from ..tolerances import (
    PREPROCESS_LEVEL_TOLERANCE,
    PREPROCESS_MAX_LOGIT_EFFECT,
    PREPROCESS_MAX_SHARE_OFF,
    PREPROCESS_MIN_TOP1_AGREEMENT,
    logit_rms,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..preprocessing.diagnose import PreprocessingComparison
    from .context import CheckContext

NAME = "preprocessing"
#: the deployment's preprocessor is called on batches of at most this many photos
BATCH = 16
#: the check uses the first this many photos of the gate's folder (the bundled four by default)
MAX_PHOTOS = 64


def thresholds(options: Any) -> dict[str, float]:
    """The check's thresholds: the options of the same names where set, else :mod:`..tolerances`."""
    def get(name: str, default: float) -> float:
        value = getattr(options, name, None)
        return float(default if value is None else value)

    return {"level_tolerance": get("preprocess_level_tolerance", PREPROCESS_LEVEL_TOLERANCE),
            "max_share_off": get("preprocess_max_share_off", PREPROCESS_MAX_SHARE_OFF),
            "max_logit_effect": get("preprocess_max_logit_effect", PREPROCESS_MAX_LOGIT_EFFECT),
            "min_top1_agreement": get("preprocess_min_top1", PREPROCESS_MIN_TOP1_AGREEMENT)}


def check(ctx: CheckContext, real: CheckResult | None = None) -> CheckResult:
    """The ``preprocessing`` check of a run (skipped without ``--onnx-parity-preprocess``); ``real``: the run's
    real_images result (your preprocessing through the file end to end): when it failed, so does this check."""
    from ..preprocessing.deploy import open_preprocessor, parse_preprocess

    o = ctx.options
    spec = getattr(o, "preprocess", None) or "metadata"
    try:
        if parse_preprocess(spec).kind == "metadata":
            return CheckResult(NAME, "skipped", "no deployment preprocessing given (--onnx-parity-preprocess SPEC)")
        if ctx.embedded:
            return CheckResult(NAME, "skipped", "the file takes raw pixels (embedded preprocessing): there is no "
                               "deployment preprocessing to compare")
        pre = open_preprocessor(spec, rootdir=getattr(o, "rootdir", None))
        result = run_check(ctx, pre)
    except OnnxParityError as exc:
        return CheckResult(NAME, "error", str(exc), details={"preprocess": spec})
    if real is not None and real.status == "failed" and result.status == "passed":
        result.status = "failed"
        result.message = (f"real_images fails end to end with your preprocessing through the file (see real_images): "
                          f"{real.message.splitlines()[0]}\n{result.message}")
    return result


def run_check(ctx: CheckContext, pre: Any) -> CheckResult:
    """Run ``pre`` (a :class:`~..preprocessing.deploy.Preprocessor`) on the gate's photos, compare, judge."""
    from ..preprocessing.diagnose import compare_preprocessing
    from ..preprocessing.images import gate_image_paths

    o = ctx.options
    limits = thresholds(o)
    paths = gate_image_paths(getattr(o, "images", None))[:MAX_PHOTOS]
    deploy_cfg = dict(ctx.export.data_config or ctx.model_config)
    ctx.progress(f"preprocessing: {pre.describe()} on {len(paths)} photo(s)")
    yours = np.concatenate([pre(paths[i:i + BATCH], deploy_cfg) for i in range(0, len(paths), BATCH)])
    reference = timm_tensors(ctx.loaded, paths)
    comp = compare_preprocessing(yours, paths, ctx.model_config, reference=reference,
                                 level_tolerance=limits["level_tolerance"], max_share_off=limits["max_share_off"])
    effect = file_effect(ctx.session, yours, reference)
    status, words = verdict(comp, effect, limits)
    details: dict[str, Any] = {"preprocess": pre.name, "preprocessor": pre.describe(), "layout": pre.layout_seen,
                               "photos": len(paths), "thresholds": limits, "effect": effect, **comp.to_dict()}
    plot = _plot(comp, getattr(o, "plots", None), ctx.model_label)
    if plot is not None:
        details["plot"] = str(plot)
    layout = f" (your preprocessing returned {pre.layout_seen}, read as such)" if pre.layout_seen == "NHWC" else ""
    return CheckResult(NAME, status, words + layout, details=details, comparison=comp)


def timm_tensors(model: Any, paths: list[Path]) -> np.ndarray:
    """timm's eval transform of the model's own data config on ``paths``, as float32 NCHW."""
    from ..preprocessing.decode import open_image
    from ..preprocessing.images import model_image_mode
    from .real_images import timm_eval_transform

    transform = timm_eval_transform(model)
    mode = model_image_mode(model)
    return np.stack([transform(open_image(p, mode)).numpy() for p in paths]).astype(np.float32)


def file_effect(session: Any, yours: np.ndarray, reference: np.ndarray) -> dict[str, Any] | None:
    """Both tensor sets through the file: the largest logit difference over timm's logit RMS, top-1 agreement.
    ``None`` when the file cannot take your tensors (another size) or cannot run."""
    from ..runtime.forward import ort_forward

    if session is None or yours.shape != reference.shape:
        return None
    try:
        ly = np.concatenate([ort_forward(session, yours[i:i + BATCH]) for i in range(0, len(yours), BATCH)])
        lt = np.concatenate([ort_forward(session, reference[i:i + BATCH]) for i in range(0, len(yours), BATCH)])
    except Exception as exc:  # noqa: BLE001 - a runtime that refuses the batch: the effect is unknown
        return {"error": f"{type(exc).__name__}: {exc}"}
    rms = logit_rms(lt)
    diff = np.abs(ly.astype(np.float64) - lt)
    per_photo = (diff.max(axis=1) / rms).tolist() if rms > 0 else [float("inf")] * len(diff)
    agree = (ly.argmax(axis=1) == lt.argmax(axis=1))
    return {"logit_max_diff": float(diff.max()), "logit_rms": rms,
            "logit_max_diff_x_rms": float(diff.max() / rms) if rms > 0 else float("inf"),
            "top1_agreement": float(agree.mean()), "per_photo_x_rms": per_photo,
            "per_photo_top1_agrees": agree.tolist()}


def verdict(comp: PreprocessingComparison, effect: dict[str, Any] | None, limits: dict[str, float]) -> tuple[str, str]:
    """``(status, message)`` by the rule of the module docstring."""
    eff = _effect_words(effect)
    if comp.equal:
        return "passed", f"{comp.message}. {eff}".strip()
    if comp.mismatch:
        fields = ", ".join(f.field for f in comp.diagnosis if f.kind == "data_config")
        return "failed", (f"your preprocessing does not follow the model's data config ({fields}): it fails "
                          f"whatever the logits do. {comp.message} {eff}").strip()
    what = "a library difference" if comp.diagnosis else "an unexplained difference"
    bad = _effect_fails(effect, limits)
    if bad:
        return "failed", f"{what}, and its effect through the file is too large: {bad}. {comp.message} {eff}".strip()
    return "passed", (f"{what} only, within the thresholds through the file (logits within "
                      f"{limits['max_logit_effect']:g} x RMS, top-1 agreement at least "
                      f"{limits['min_top1_agreement']:.0%}). {comp.message} {eff}").strip()


def _effect_fails(effect: dict[str, Any] | None, limits: dict[str, float]) -> str:
    if not effect or "error" in effect:
        return ""
    out = []
    if effect["logit_max_diff_x_rms"] > limits["max_logit_effect"]:
        out.append(f"logits differ by {effect['logit_max_diff_x_rms']:.3g} x RMS > {limits['max_logit_effect']:g}")
    if effect["top1_agreement"] < limits["min_top1_agreement"]:
        out.append(f"top-1 agreement {effect['top1_agreement']:.0%} < {limits['min_top1_agreement']:.0%}")
    return "; ".join(out)


def _effect_words(effect: dict[str, Any] | None) -> str:
    if effect is None:
        return "Effect through the file: not measured (your tensors have another size than the file takes)."
    if "error" in effect:
        return f"Effect through the file: not measured ({effect['error']})."
    return (f"Effect through the file: logits differ by up to {effect['logit_max_diff_x_rms']:.3g} x logit RMS, "
            f"top-1 agreement {effect['top1_agreement']:.0%} with timm's tensors.")


def _plot(comp: PreprocessingComparison, folder: Any, label: str) -> Path | None:
    if not folder or comp.equal or comp.per_photo[0].get("mean_levels") is None:
        return None
    from ..files import safe_name
    from ..report.preprocess_plot import plot_level_map

    worst = max(range(len(comp.per_photo)), key=lambda i: comp.per_photo[i]["mean_levels"])
    photo = comp.per_photo[worst]["photo"]
    title = f"{label}: {photo}, your preprocessing against timm's (max {comp.per_photo[worst]['max_levels']:.3g} levels)"
    return plot_level_map(comp.level_map(worst), Path(folder) / f"{safe_name(label)}-preprocessing.png", title)
