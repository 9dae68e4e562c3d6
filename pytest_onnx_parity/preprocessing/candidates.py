"""Candidate preprocessing pipelines: timm's eval transform with one or a few steps done differently.

A :class:`Candidate` names how a deployment's pipeline may differ from timm's: the normalisation
(``mean_std``, ``scale``, ``channel_order``, ``layout``), the geometry (``input_size``, ``crop_pct``,
``crop_mode``), the resize (``interpolation``, ``library``) and the decoding (``colour_profile``,
``exif``, ``grayscale``). Every field left at ``None``/``False`` is the model's own.
:class:`CandidateRunner` makes a candidate's tensors for a few photos, decoding each photo once and
resizing each (photo, geometry) once, so :mod:`.diagnose` can try a hundred candidates in a second.

No torch here; OpenCV (``cv2``) is used when it is installed, else its resize is left out of the
candidates (a bilinear resize without antialiasing, in numpy, stands for the libraries that skip it).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

from .transform import EvalTransform, _center_crop_or_pad

#: named normalisations: (mean, std) of pixels scaled to 0..1
NORMALISATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "ImageNet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "Inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
#: resize libraries a candidate may use besides Pillow (timm's), with what the report calls them
LIBRARIES = {
    "PIL": "Pillow (antialiased, timm's)",
    "cv2": "OpenCV cv2.resize",
    "noaa": "a bilinear resize without antialiasing (canvas drawImage, tf.image.resize, hand-written)",
}
_CV2_FLAGS = {"nearest": "INTER_NEAREST", "bilinear": "INTER_LINEAR", "bicubic": "INTER_CUBIC", "box": "INTER_AREA"}


@dataclass(frozen=True)
class Candidate:
    """One pipeline: the model's data config with the named fields done otherwise (``None``: the model's)."""

    mean_std: str | tuple[tuple[float, ...], tuple[float, ...]] | None = None  # a NORMALISATIONS key, or fitted
    scale: str | None = None  # "0-255": pixels not divided by 255
    channel_order: str | None = None  # "BGR"
    layout: str | None = None  # "NHWC read as NCHW": an HWC buffer reshaped to CHW
    input_size: tuple[int, int] | None = None
    crop_pct: float | None = None
    crop_mode: str | None = None  # center, squash, border (timm's: pads with the mean), letterbox (pads black)
    interpolation: str | None = None  # nearest, bilinear, bicubic, box (OpenCV's INTER_AREA)
    library: str | None = None  # "cv2" or "noaa"
    colour_profile: bool = False  # the embedded ICC profile converted to sRGB
    exif: bool = False  # EXIF orientation applied
    grayscale: bool = False  # decoded as grayscale, replicated to three channels

    def changed(self) -> dict[str, Any]:
        """The fields this candidate sets, by name."""
        return {k: v for k, v in self.__dict__.items() if v not in (None, False)}

    def only(self, name: str) -> Candidate:
        """The model's pipeline with only field ``name`` taken from this one (a resize library with its kernel)."""
        extra = {"interpolation": self.interpolation} if name == "library" else {}
        return replace(Candidate(), **{name: getattr(self, name)}, **extra)

    def without(self, name: str) -> Candidate:
        """This pipeline with field ``name`` back at the model's (a resize library with its kernel)."""
        extra = {"interpolation": None} if name == "library" else {}
        return replace(self, **{name: Candidate().__dict__[name]}, **extra)


#: the fields whose difference is a data-config mismatch (fails whatever the logits do), the rest being a
#: library difference (judged by its effect through the file)
CONFIG_FIELDS = ("mean_std", "scale", "channel_order", "layout", "input_size", "crop_pct", "crop_mode", "grayscale")
LIBRARY_FIELDS = ("interpolation", "library", "colour_profile", "exif")


def cv2_module() -> Any:
    """OpenCV when installed, else ``None``."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


class CandidateRunner:
    """Tensors of candidates for a fixed set of photos and the model's data config."""

    def __init__(self, images: list[Image.Image], config: Mapping[str, Any]) -> None:
        self.raw = images  # as decoded, before any RGB conversion (keeps EXIF and ICC)
        self.base = EvalTransform.from_config(dict(config))
        self.config = config
        self._decoded: dict[tuple[bool, bool, bool], list[Image.Image]] = {}
        self._geometry: dict[tuple[Any, ...], np.ndarray] = {}
        self.cv2 = cv2_module()

    # ------------------------------------------------------------------ decoding
    def decoded(self, icc: bool, exif: bool, gray: bool) -> list[Image.Image]:
        key = (icc, exif, gray)
        if key not in self._decoded:
            self._decoded[key] = [_decode(im, icc, exif, gray, self.base.mode) for im in self.raw]
        return self._decoded[key]

    def has_exif_rotation(self) -> bool:
        return any(_orientation(im) not in (None, 1) for im in self.raw)

    def has_icc(self) -> bool:
        return any(im.info.get("icc_profile") for im in self.raw)

    # ------------------------------------------------------------------ geometry
    def transform_of(self, cand: Candidate) -> EvalTransform:
        changes: dict[str, Any] = {}
        if cand.input_size is not None:
            changes["input_size"] = tuple(cand.input_size)
        if cand.crop_pct is not None:
            changes["crop_pct"] = cand.crop_pct
        if cand.crop_mode is not None:
            changes["crop_mode"] = "border" if cand.crop_mode == "letterbox" else cand.crop_mode
        if cand.interpolation is not None:
            changes["interpolation"] = cand.interpolation
        return replace(self.base, **changes) if changes else self.base

    def pixels(self, cand: Candidate) -> np.ndarray | None:
        """N,H,W,C uint8 crops of the candidate's geometry and decoding (``None``: its library is missing)."""
        key = (cand.input_size, cand.crop_pct, cand.crop_mode, cand.interpolation, cand.library,
               cand.colour_profile, cand.exif, cand.grayscale)
        if key not in self._geometry:
            if cand.library == "cv2" and self.cv2 is None:
                return None
            tf = self.transform_of(cand)
            images = self.decoded(cand.colour_profile, cand.exif, cand.grayscale)
            fill = (0,) * tf.channels if cand.crop_mode == "letterbox" else tf.fill
            self._geometry[key] = np.stack([self._one(tf, im, cand, fill) for im in images])
        return self._geometry[key]

    def _one(self, tf: EvalTransform, image: Image.Image, cand: Candidate, fill: tuple[int, ...]) -> np.ndarray:
        if cand.library is None and cand.crop_mode != "letterbox":
            return tf.pixels(image)  # timm's own, pixel-exact
        size = tf.resized_size(*image.size)
        if cand.library is None:
            arr = np.asarray(image.resize(size, _pil_filter(tf.interpolation)) if size != image.size else image)
        elif cand.library == "cv2":
            arr = self._cv2_resize(np.asarray(image), size, tf.interpolation)
        else:
            arr = bilinear_no_antialias(np.asarray(image), size)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return _center_crop_or_pad(arr, tf.input_size[0], tf.input_size[1], fill)

    def _cv2_resize(self, arr: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
        cv2 = self.cv2
        flag = getattr(cv2, _CV2_FLAGS.get(interpolation, "INTER_LINEAR"))
        if tuple(size) == (arr.shape[1], arr.shape[0]):
            return arr
        out = cv2.resize(np.ascontiguousarray(arr), tuple(size), interpolation=flag)
        return out

    # ------------------------------------------------------------------ normalisation
    def tensors(self, cand: Candidate) -> np.ndarray | None:
        """float32 N,C,H,W of the candidate (``None``: not available here)."""
        pixels = self.pixels(cand)
        if pixels is None:
            return None
        mean, std = self.mean_std(cand)
        x = pixels.astype(np.float32)
        if cand.scale != "0-255":
            x = x / np.float32(255)
        if cand.channel_order == "BGR":
            x = x[..., ::-1]
        x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
        if cand.layout == "NHWC read as NCHW":
            n, h, w, c = x.shape
            return np.ascontiguousarray(x).reshape(n, c, h, w)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def mean_std(self, cand: Candidate) -> tuple[tuple[float, ...], tuple[float, ...]]:
        c = self.base.channels
        if cand.mean_std is None:
            return self.base.mean, self.base.std
        mean, std = NORMALISATIONS[cand.mean_std] if isinstance(cand.mean_std, str) else cand.mean_std
        return mean[:c], std[:c]

    def fit_mean_std(self, cand: Candidate, yours: np.ndarray) -> Candidate | None:
        """``cand`` with the per-channel mean and std that fit ``yours`` best (least squares on its pixels), for
        normalisation constants no named candidate has; ``None`` where no fit exists."""
        pixels = self.pixels(replace(cand, mean_std=None, scale=None))
        if pixels is None or cand.layout is not None:
            return None
        x = pixels.astype(np.float64) / 255.0
        if cand.channel_order == "BGR":
            x = x[..., ::-1]
        mean, std = [], []
        for c in range(x.shape[-1]):
            a, b = np.polyfit(x[..., c].ravel(), yours[:, c].astype(np.float64).ravel(), 1)
            if abs(a) < 1e-6:
                return None
            mean.append(round(float(-b / a), 6))
            std.append(round(float(1.0 / a), 6))
        return replace(cand, mean_std=(tuple(mean), tuple(std)), scale=None)


def _pil_filter(name: str) -> Image.Resampling:
    from .transform import INTERPOLATIONS

    return INTERPOLATIONS[name]


def bilinear_no_antialias(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling with half-pixel centres and no antialiasing filter (what ``cv2.resize`` with
    ``INTER_LINEAR``, a canvas and most hand-written resizes do), on an HxW(xC) uint8 array, rounded."""
    w, h = size
    src_h, src_w = arr.shape[:2]
    if (w, h) == (src_w, src_h):
        return arr
    ys = np.clip((np.arange(h) + 0.5) * (src_h / h) - 0.5, 0, src_h - 1)
    xs = np.clip((np.arange(w) + 0.5) * (src_w / w) - 0.5, 0, src_w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, src_h - 1), np.minimum(x0 + 1, src_w - 1)
    wy, wx = (ys - y0)[:, None], (xs - x0)[None, :]
    a = arr.astype(np.float32)
    if a.ndim == 3:
        wy, wx = wy[..., None], wx[..., None]
    top = a[y0][:, x0] * (1 - wx) + a[y0][:, x1] * wx
    bottom = a[y1][:, x0] * (1 - wx) + a[y1][:, x1] * wx
    return np.clip(np.rint(top * (1 - wy) + bottom * wy), 0, 255).astype(np.uint8)


def _orientation(image: Image.Image) -> int | None:
    try:
        return image.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - a broken EXIF block means no orientation
        return None


def _decode(image: Image.Image, icc: bool, exif: bool, gray: bool, mode: str) -> Image.Image:
    from PIL import ImageOps

    if exif:
        image = ImageOps.exif_transpose(image) or image
    if icc and image.info.get("icc_profile"):
        image = _to_srgb(image)
    if gray:
        image = image.convert("L")
    return image.convert(mode) if image.mode != mode else image


def _to_srgb(image: Image.Image) -> Image.Image:
    import io

    from PIL import ImageCms

    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
        rgb = image.convert("RGB")
        return ImageCms.profileToProfile(rgb, source, ImageCms.createProfile("sRGB"), outputMode="RGB") or rgb
    except (OSError, ValueError, ImageCms.PyCMSError):
        return image
