"""The words of a preprocessing diagnosis: each finding in the data config's own terms, and its fix."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .candidates import NORMALISATIONS, Candidate

if TYPE_CHECKING:  # pragma: no cover
    from .candidates import CandidateRunner

#: what to change in the deployment for each field (the docs' table says the same)
FIXES = {
    "mean_std": "normalise with the model's mean and std (the file's data config)",
    "scale": "divide the pixels by 255 before subtracting the mean",
    "channel_order": "convert BGR to RGB before normalising (cv2.cvtColor(img, cv2.COLOR_BGR2RGB))",
    "layout": "transpose HWC to CHW (array.transpose(2, 0, 1)); a reshape does not reorder the values",
    "input_size": "resize to the data config's input_size",
    "crop_pct": "resize the shorter edge to floor(input_size / crop_pct), then centre-crop",
    "crop_mode": "resize keeping the aspect ratio and centre-crop, as the data config's crop_mode says",
    "interpolation": "resize with the data config's interpolation",
    "library": "resize with an antialiasing resize (Pillow's Image.resize) with the data config's interpolation",
    "colour_profile": "decode without colour management, as timm does (or convert on the torch side too)",
    "exif": "use the photo as stored, as timm does (or apply the EXIF orientation on the torch side too)",
    "grayscale": "decode the photo as RGB",
}


def fmt_pct(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.3g}%"


def _vec(values: Sequence[float]) -> str:
    vals = [round(float(v), 4) for v in values]
    return f"{vals[0]:g}" if len(set(vals)) == 1 else "(" + ", ".join(f"{v:g}" for v in vals) + ")"


def _norm_words(mean: Sequence[float], std: Sequence[float]) -> str:
    name = next((k for k, (m, s) in NORMALISATIONS.items()
                 if all(abs(a - b) < 1e-4 for a, b in zip(list(m) + list(s), list(mean) + list(std)))), None)
    label = {"ImageNet": " (ImageNet's defaults)", "Inception": " (Inception's)", "none": " (no normalisation)"}
    if _vec(mean) == _vec(std):
        text = f"mean = std = {_vec(mean)}"
    else:
        text = f"mean = {_vec(mean)}, std = {_vec(std)}"
    return text + label.get(name or "", "")


def describe_field(name: str, cand: Candidate, runner: CandidateRunner, cfg: Mapping[str, Any]) -> tuple[str, str]:
    """``(yours, model)``: what the deployment does for field ``name`` and what the model's data config says."""
    tf = runner.base
    if name == "mean_std":
        return _norm_words(*runner.mean_std(cand)), _norm_words(tf.mean, tf.std)
    if name == "scale":
        return "pixels in 0..255 (not divided by 255)", "pixels divided by 255 (0..1) before mean/std"
    if name == "channel_order":
        return "channel order = BGR", "channel order = RGB"
    if name == "layout":
        return "an NHWC buffer reshaped to NCHW", "NCHW (channels first)"
    if name == "crop_pct":
        return f"crop_pct = {cand.crop_pct:g}", f"crop_pct = {tf.crop_pct:g}"
    if name == "crop_mode":
        modes = {"squash": "squash (resized to the input size, aspect ratio not kept)",
                 "center": "center (shorter edge resized, centre crop)",
                 "border": "border (fitted inside, padded with the mean colour)",
                 "letterbox": "letterbox (fitted inside, padded with black)"}
        return f"crop_mode = {modes.get(cand.crop_mode or '', cand.crop_mode)}", f"crop_mode = {modes.get(tf.crop_mode, tf.crop_mode)}"
    if name == "interpolation":
        return f"interpolation = {cand.interpolation} (Pillow)", f"interpolation = {tf.interpolation}"
    if name == "library":
        return _library_words(cand), f"Pillow's antialiased {tf.interpolation} resize (timm's)"
    if name == "colour_profile":
        return "the embedded ICC profile converted to sRGB", "the stored pixel values (timm ignores ICC profiles)"
    if name == "exif":
        return "the EXIF orientation applied", "the photo as stored (timm ignores EXIF orientation)"
    if name == "grayscale":
        return "grayscale replicated to three channels", "RGB"
    return str(getattr(cand, name, "")), str(cfg.get(name, ""))


def _library_words(cand: Candidate) -> str:
    if cand.library == "cv2":
        flag = {"nearest": "INTER_NEAREST", "bilinear": "INTER_LINEAR", "bicubic": "INTER_CUBIC",
                "box": "INTER_AREA"}.get(cand.interpolation or "", cand.interpolation)
        aa = {"INTER_AREA": " (box filter)", "INTER_LINEAR": " (no antialiasing, as a canvas or a hand-written "
              "bilinear resize)"}.get(flag or "", " (no antialiasing)")
        return f"OpenCV cv2.resize {flag}{aa}"
    return "a bilinear resize without antialiasing (canvas drawImage, hand-written)"


def closest_words(findings: Sequence[Any], closest: Mapping[str, Any] | None) -> str:
    """One paragraph (``findings``: :class:`~.diagnose.Finding` objects): the closest candidate in the data
    config's words, how close, and what is left."""
    if not closest or closest.get("residual_mean_levels") is None:
        return "No candidate pipeline could be compared with your tensors."
    if not findings:
        return (f"No candidate pipeline explains the difference (tried: mean/std, channel order, layout, scale, "
                f"size, crop_pct, crop_mode, interpolation, resize library, colour profile, EXIF, grayscale): "
                f"it is unexplained (max {closest['residual_max_levels']:.3g} levels).")
    yours = " and ".join(f.yours for f in findings)
    model = "; ".join(f"{f.model}" for f in findings)
    max_abs = closest["residual_max_abs"]
    if max_abs < 1e-4:
        how = f"equal timm's with {yours} " + ("exactly" if max_abs == 0 else f"to {max_abs:.1g}")
    else:
        how = (f"are closest to timm's with {yours}: within max {closest['residual_max_levels']:.3g} levels, "
               f"mean {closest['residual_mean_levels']:.3g} levels")
    text = (f"Diagnosis: your tensors {how} "
            f"(explains {fmt_pct(closest['explains'])} of the difference); the model was trained with {model}.")
    parts = [f"{f.field}: {f.yours} (explains {fmt_pct(f.explains)}; {f.kind.replace('_', '-')} "
             f"{'mismatch' if f.kind == 'data_config' else 'difference'}; fix: {FIXES.get(f.field, '')})"
             for f in findings]
    text += " Findings: " + "; ".join(parts) + "."
    left = 1.0 - float(closest["explains"])
    if closest["residual_max_levels"] > 1.0 and left > 0.01:
        text += (f" Unexplained by any candidate: {fmt_pct(left)} of the difference (max "
                 f"{closest['residual_max_levels']:.3g} levels left).")
    return text
