"""timm's eval preprocessing, without torch: what a deployment runs.

:func:`preprocess` turns images into the float32 NCHW batch that
``timm.data.create_transform(**data_config, is_training=False)`` gives for the
same images, using only numpy and Pillow. It is what a deployment of an ONNX
file runs, so this module never imports torch (nor timm).

What it does, step by step, for each image:

1. **Decode** (file paths): ``PIL.Image.open(path).convert("RGB")``, exactly
   as timm's ``ImageDataset`` loads a file. A directory path stands for every
   image below it (see :func:`pytest_onnx_parity.preprocessing.images.find_images`).
2. **Convert to RGB** (PIL images of any other mode, arrays of shape HxW or
   HxWx4): ``image.convert("RGB")``, the same call timm's loader makes; for a
   1-channel config (``input_size`` ``(1, H, W)``, a model made with
   ``in_chans=1``) ``image.convert("L")`` instead, as timm's ``train.py`` and
   ``validate.py`` load images for it (``input_img_mode``; Pillow's integer
   ITU-R 601-2 luma), before the resize. The RGB conversion means: ``L`` is replicated to three channels; ``RGBA``/``LA`` drop alpha
   (no compositing onto white: transparent pixels keep their stored colour);
   ``P`` is looked up in its palette; ``CMYK`` uses Pillow's naive conversion;
   16-bit and 32-bit modes (``I;16``, ``I``, ``F``) are **clipped** to 0..255,
   not rescaled, so a 16-bit photo comes out nearly white, as it does in timm.
3. **Resize** with Pillow's ``Image.resize`` and the config's filter
   (``bilinear``, ``bicubic``, and also ``nearest``, ``box``, ``hamming``,
   ``lanczos``), to the size timm computes, with timm's own rounding:

   * ``scale = floor(input_size / crop_pct)`` per edge;
   * ``crop_mode="center"`` and a square scale: the shorter edge becomes
     ``scale`` and the longer ``int(scale * long / short)`` (torchvision's
     ``Resize(int)``); a non-square scale: timm's ``ResizeKeepRatio``, both
     edges ``round(edge / min(ratio_h, ratio_w))``;
   * ``crop_mode="squash"``: exactly ``scale``, aspect ratio not kept;
   * ``crop_mode="border"``: both edges ``round(edge / max(ratio_h, ratio_w))``
     (the longer edge fits ``scale``).

4. **Crop** to ``input_size`` at the centre, offsets
   ``int(round((edge - target) / 2.0))``; where the resized image is smaller
   than the target (``crop_pct > 1``, ``border`` mode, thin images) it is
   padded first, ``(target - edge) // 2`` before and the rest after, with
   black (``center``, ``squash``: torchvision's ``CenterCrop``) or with
   ``round(255 * mean)`` (``border``: timm's ``CenterCropOrPad``).
5. **Normalise**: ``(pixel / 255 - mean) / std`` in float32, the operations
   torchvision's ``ToTensor`` and ``Normalize`` perform, through a 256-entry
   lookup table per channel.

What it does not do, as timm's eval pipeline does not:

* no EXIF orientation: a photo whose EXIF says "rotate 90°" is used as stored
  (call ``PIL.ImageOps.exif_transpose`` yourself if your deployment does, and
  then do it on the torch side too);
* no colour management: embedded ICC profiles are ignored, pixel values are
  taken as they are stored;
* no gamma or colour-space handling, no alpha compositing, no 16-bit rescaling;
* only the first frame of animated GIF/WebP/multi-page TIFF files;
* no other channel counts than three (RGB) and one (``L``), as timm's loader makes no others.

The output has the config's channels, 3 or 1. The result matches timm's transform to float32 rounding (the zoo-wide test in
``tests/test_preprocess.py`` allows at most 1e-4 in normalised units).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence, Union

import numpy as np
from PIL import Image

from ..errors import ImageError, MissingMetadataError, SpecError
from ..onnxfile import metadata
from . import dataconfig
from .decode import ChannelsError, _as_items, _to_pil, image_mode, open_image, to_mode, to_rgb
from .imagefiles import bad_files_message

if TYPE_CHECKING:  # pragma: no cover
    import onnx

ImageLike = Union[str, "os.PathLike[str]", Image.Image, np.ndarray]
ConfigLike = Union[Mapping[str, Any], str, "os.PathLike[str]", "onnx.ModelProto"]

__all__ = [
    "CROP_MODES",
    "INTERPOLATIONS",
    "ChannelsError",
    "EvalTransform",
    "open_image",
    "preprocess",
    "resolve_config",
    "to_rgb",
]

#: timm's interpolation names and the Pillow filters torchvision maps them to.
INTERPOLATIONS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}
#: The crop modes of timm's ``transforms_imagenet_eval``.
CROP_MODES = ("center", "squash", "border")
#: timm's ``DEFAULT_CROP_PCT``, used when a config's crop_pct is 0.
DEFAULT_CROP_PCT = 0.875


@dataclass(frozen=True)
class EvalTransform:
    """timm's eval transform for one data config, in numpy and Pillow.

    Build it with :meth:`from_config`; call it on an RGB PIL image to get a
    float32 CHW array. :meth:`pixels` gives the uint8 HxWxC crop before
    normalisation, :meth:`resized_size` the size the image is resized to.
    ``channels`` is 3 (RGB) or 1 (grayscale, images converted to ``L`` first);
    ``mean`` and ``std`` have one value per channel.
    """

    input_size: tuple[int, int]  # (height, width)
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float
    crop_mode: str
    channels: int = 3
    _lut: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if min(self.scale_size) < 1:
            raise SpecError(
                f"input_size {self.input_size} with crop_pct {self.crop_pct} resizes to "
                f"{self.scale_size}: crop_pct must be at most the smaller input edge"
            )
        # ToTensor: uint8 -> float32 / 255; Normalize: (x - mean) / std, all float32.
        scaled = np.arange(256, dtype=np.float32) / np.float32(255)
        mean = np.asarray(self.mean, dtype=np.float32)[:, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None]
        object.__setattr__(self, "_lut", (scaled[None, :] - mean) / std)

    @classmethod
    def from_config(cls, config: ConfigLike, *, test_time: bool = False) -> "EvalTransform":
        """The transform of a data-config dict, an ONNX file or an ONNX Runtime session."""
        cfg = resolve_config(config, test_time=test_time)
        return cls(
            input_size=(int(cfg["input_size"][-2]), int(cfg["input_size"][-1])),
            interpolation=cfg["interpolation"],
            mean=tuple(cfg["mean"]),  # type: ignore[arg-type]
            std=tuple(cfg["std"]),  # type: ignore[arg-type]
            crop_pct=float(cfg["crop_pct"]),
            crop_mode=cfg["crop_mode"],
            channels=int(cfg["input_size"][0]),
        )

    @property
    def mode(self) -> str:
        """The PIL mode images are converted to first: ``"RGB"``, or ``"L"`` for one channel."""
        return image_mode(self.channels)

    @property
    def scale_size(self) -> tuple[int, int]:
        """``floor(input_size / crop_pct)`` per edge, as (height, width)."""
        crop_pct = self.crop_pct or DEFAULT_CROP_PCT
        return math.floor(self.input_size[0] / crop_pct), math.floor(self.input_size[1] / crop_pct)

    @property
    def fill(self) -> tuple[int, ...]:
        """The padding colour: ``round(255 * mean)`` in border mode, black otherwise."""
        if self.crop_mode == "border":
            return tuple(round(255 * v) for v in self.mean)
        return (0,) * self.channels

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) an image of that size is resized to, with timm's rounding."""
        scale_h, scale_w = self.scale_size
        if self.crop_mode == "squash":
            return scale_w, scale_h
        if self.crop_mode == "center" and scale_h == scale_w:
            # torchvision Resize(int): shorter edge to size, longer edge truncated.
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = scale_h, int(scale_h * long / short)
            return (new_short, new_long) if width <= height else (new_long, new_short)
        # timm ResizeKeepRatio: longest=1.0 for border, 0.0 for center.
        longest = 1.0 if self.crop_mode == "border" else 0.0
        ratio_h = height / scale_h
        ratio_w = width / scale_w
        ratio = max(ratio_h, ratio_w) * longest + min(ratio_h, ratio_w) * (1.0 - longest)
        new_h, new_w = (round(x * 1.0 / ratio) for x in (height, width))
        return new_w, new_h

    def pixels(self, image: Image.Image) -> np.ndarray:
        """The resized, cropped or padded uint8 HxWxC image (C = :attr:`channels`), before normalisation."""
        if image.mode != self.mode:
            image = to_mode(image, self.mode)
        size = self.resized_size(*image.size)
        if size != image.size:
            if size[0] <= 0 or size[1] <= 0:
                raise ImageError(
                    f"an image of {image.size[0]}x{image.size[1]} pixels resizes to {size[0]}x{size[1]} "
                    f"in crop_mode {self.crop_mode!r} (timm's transform fails on it too). "
                    "Use images whose aspect ratio is less extreme."
                )
            image = image.resize(size, INTERPOLATIONS[self.interpolation])
        th, tw = self.input_size
        w, h = image.size
        if tw <= w and th <= h:  # plain centre crop, done by Pillow before copying
            top = int(round((h - th) / 2.0))
            left = int(round((w - tw) / 2.0))
            return _hwc(np.asarray(image.crop((left, top, left + tw, top + th))))
        return _center_crop_or_pad(_hwc(np.asarray(image)), th, tw, self.fill)

    def normalize(self, pixels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """uint8 HxWxC -> float32 CHW, ``(pixels / 255 - mean) / std``."""
        if out is None:
            out = np.empty((self.channels,) + pixels.shape[:2], dtype=np.float32)
        pixels = _hwc(pixels)
        for c in range(self.channels):
            np.take(self._lut[c], pixels[:, :, c], out=out[c])
        return out

    def __call__(self, image: Image.Image, out: np.ndarray | None = None) -> np.ndarray:
        """float32 CHW array of one image."""
        return self.normalize(self.pixels(image), out=out)


def preprocess(images: ImageLike | Iterable[ImageLike], config: ConfigLike, *, test_time: bool = False) -> np.ndarray:
    """Preprocess images the way timm's eval transform does, without torch.

    ``images`` is one image or a sequence of them: file paths (``str`` or
    ``Path``; a directory stands for every image below it), PIL images of any
    mode, or uint8 arrays of shape HxWx3 (also HxW and HxWx4; an NxHxWx3
    array is a batch). ``config`` is a data-config dict (``input_size``,
    ``interpolation``, ``mean``, ``std``, ``crop_pct``, ``crop_mode``), the
    path of an ONNX file carrying that config in its metadata, an
    ``onnx.ModelProto`` or an ``onnxruntime.InferenceSession``. With
    ``test_time=True`` the config's ``test_input_size`` and ``test_crop_pct``
    replace the eval ones where it has them.

    A 1-channel config (``input_size`` ``(1, H, W)``, one-value ``mean`` and
    ``std``) converts every image to grayscale (``convert("L")``) first, as
    timm loads images for a model made with ``in_chans=1``.

    Returns a float32 array of shape ``(N, C, H, W)``, C the config's channels
    (3, or 1). Unreadable files raise
    one :class:`~pytest_onnx_parity.errors.ImageError` that lists all of them.
    """
    transform = EvalTransform.from_config(config, test_time=test_time)
    items = _as_items(images)
    h, w = transform.input_size
    out = np.empty((len(items), transform.channels, h, w), dtype=np.float32)
    bad: list[str] = []
    for i, item in enumerate(items):
        try:
            image = _to_pil(item, transform.mode)
        except ImageError as exc:
            bad.append(str(exc))
            continue
        transform(image, out=out[i])
    if bad:
        raise ImageError(bad_files_message(bad))
    return out


def resolve_config(config: ConfigLike, *, test_time: bool = False) -> dict[str, Any]:
    """The six data-config fields of ``config``, checked, with test-time settings applied on request."""
    if isinstance(config, Mapping):
        missing = [k for k in dataconfig.DATA_CONFIG_FIELDS if config.get(k) is None]
        if missing:
            raise MissingMetadataError(
                f"data config lacks {', '.join(missing)} (got keys {sorted(config)}). Pass the model's own "
                "config: pytest_onnx_parity.resolve_data_config(model) or read_data_config(onnx_path)."
            )
        cfg = dataconfig.apply_test_time(config) if test_time else {k: config[k] for k in dataconfig.DATA_CONFIG_FIELDS}
    elif hasattr(config, "get_modelmeta"):  # onnxruntime.InferenceSession
        import json

        raw = config.get_modelmeta().custom_metadata_map.get(metadata.DATA_CONFIG_KEY)  # type: ignore[union-attr]
        if raw is None:
            raise MissingMetadataError(
                f"this ONNX Runtime session's model carries no data config (metadata key "
                f"{metadata.DATA_CONFIG_KEY!r}). Export it with pytest_onnx_parity.export_onnx."
            )
        return resolve_config(json.loads(raw), test_time=test_time)
    elif isinstance(config, (str, os.PathLike)) or hasattr(config, "graph"):
        cfg = metadata.read_data_config(config, test_time=test_time)  # type: ignore[arg-type]
    else:
        raise SpecError(
            f"config must be a data-config dict, an ONNX file path, an onnx.ModelProto or an "
            f"onnxruntime.InferenceSession, not {type(config).__name__}"
        )
    return _check_config(cfg)


def _check_config(cfg: dict[str, Any]) -> dict[str, Any]:
    size = cfg["input_size"]
    size = [size, size] if isinstance(size, int) else [int(v) for v in size]
    channels = size[0] if len(size) == 3 else 3
    if len(size) == 3:
        image_mode(channels)  # 3 (RGB) or 1 (L), else a ChannelsError naming the fix
    if len(size) not in (2, 3) or min(size[-2:]) < 1:
        raise SpecError(f"input_size {tuple(size)} is not (channels, height, width)")
    interpolation = getattr(cfg["interpolation"], "value", cfg["interpolation"])  # torchvision's enum
    if interpolation not in INTERPOLATIONS:
        raise SpecError(
            f"interpolation {interpolation!r} is not one of {', '.join(INTERPOLATIONS)} "
            "(timm's eval transform knows no other)"
        )
    crop_mode = cfg["crop_mode"]
    if crop_mode not in CROP_MODES:
        raise SpecError(f"crop_mode {crop_mode!r} is not one of {', '.join(CROP_MODES)}")
    crop_pct = float(cfg["crop_pct"])
    if not crop_pct >= 0:
        raise SpecError(f"crop_pct {cfg['crop_pct']!r} is not a positive number")
    stats = {}
    for key in ("mean", "std"):
        values = [float(v) for v in cfg[key]]
        if len(values) == 1:
            values *= channels
        if len(values) != channels:
            raise ChannelsError(_stats_message(key, values, tuple(size), channels))
        stats[key] = values
    if any(s == 0 for s in stats["std"]):
        raise SpecError(f"std {cfg['std']!r} contains zero")
    return {
        "input_size": [channels, *size[-2:]],
        "interpolation": interpolation,
        "mean": stats["mean"],
        "std": stats["std"],
        "crop_pct": crop_pct,
        "crop_mode": crop_mode,
    }


def _stats_message(key: str, values: list[float], size: tuple[int, ...], channels: int) -> str:
    if channels == 1 and len(values) == 3:
        average = sum(values) / 3
        return (f"{key} {tuple(values)} has 3 values, one per channel of 3-channel RGB input, but input_size {size} "
                f"is 1-channel grayscale (timm's Normalize fails on it too): pass a 1-value {key}, e.g. their "
                f"average [{average:.4g}]")
    return (f"{key} {tuple(values)} has {len(values)} values; input_size {size} has {channels} channel"
            f"{'s' if channels > 1 else ''}: pass {channels} values (or one, used for every channel)")


def _hwc(array: np.ndarray) -> np.ndarray:
    """An HxW (grayscale) array as HxWx1; HxWxC as it is."""
    return array[:, :, None] if array.ndim == 2 else array


def _center_crop_or_pad(array: np.ndarray, th: int, tw: int, fill: Sequence[int]) -> np.ndarray:
    """torchvision's ``center_crop`` / timm's ``center_crop_or_pad`` on an HxWxC uint8 array."""
    h, w = array.shape[:2]
    if tw > w or th > h:
        left = (tw - w) // 2 if tw > w else 0
        top = (th - h) // 2 if th > h else 0
        right = (tw - w + 1) // 2 if tw > w else 0
        bottom = (th - h + 1) // 2 if th > h else 0
        padded = np.empty((h + top + bottom, w + left + right, array.shape[2]), dtype=np.uint8)
        padded[:] = np.clip(np.asarray(fill), 0, 255).astype(np.uint8)
        padded[top : top + h, left : left + w] = array
        array = padded
        h, w = array.shape[:2]
        if (h, w) == (th, tw):
            return array
    top = int(round((h - th) / 2.0))
    left = int(round((w - tw) / 2.0))
    return array[top : top + th, left : left + tw]
