"""What a user hands ``preprocess``, decoded as timm's loader decodes it: paths, folders, PIL images and
arrays, each turned into a PIL image of the model's mode (every unreadable file named in one :class:`ImageError`).

The mode follows the data config's channel count, as timm's ``train.py`` and ``validate.py`` choose it
(``input_img_mode = 'RGB' if data_config['input_size'][0] == 3 else 'L'``, then ``ImageDataset`` calls
``Image.open(path).convert(input_img_mode)``): :func:`image_mode` is that rule, the one place both sides of
a check (timm's transform and :func:`~.transform.preprocess`) take it from. ``L`` is Pillow's ITU-R 601-2
luma in integer arithmetic, ``(R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image

from ..errors import ImageError, SpecError
from .imagefiles import find_images

#: PIL's image mode for a model of this many input channels (timm's ``input_img_mode``).
CHANNEL_MODES = {3: "RGB", 1: "L"}


class ChannelsError(SpecError):
    """A data config whose channel count (``input_size[0]``) timm's image loading cannot make."""


def image_mode(config: Mapping[str, Any] | int | Any) -> str:
    """``"RGB"`` for a 3-channel model, ``"L"`` (grayscale) for a 1-channel one, as timm decides it.

    ``config`` is a data-config dict (its ``input_size[0]``; an ``input_size`` of two values is RGB), a
    channel count, or anything with a ``channels`` attribute (an :class:`~.transform.EvalTransform`).
    Any other count raises :class:`ChannelsError`.
    """
    if isinstance(config, Mapping):
        size = config.get("input_size")
        channels = 3 if size is None or isinstance(size, int) or len(size) != 3 else size[0]
    else:
        channels = getattr(config, "channels", config)
    try:
        return CHANNEL_MODES[int(channels)]
    except (KeyError, TypeError, ValueError):
        raise ChannelsError(
            f"input_size[0] = {channels!r}: timm's image loading makes 3-channel RGB or 1-channel grayscale ('L') "
            "input only. Pass a data config with input_size (3, H, W) or (1, H, W); a model with other channels "
            "needs its own image decoding (preprocess cannot make it)."
        ) from None


def to_mode(image: Image.Image, mode: str = "RGB") -> Image.Image:
    """``image.convert(mode)``, as timm's loader does; an :class:`ImageError` where Pillow cannot."""
    if image.mode == mode:
        return image
    try:
        return image.convert(mode)
    except (ValueError, OSError) as exc:
        raise ImageError(
            f"cannot convert a PIL image of mode {image.mode!r} to {mode} ({exc}). "
            f"Convert it to {mode} yourself before passing it."
        ) from exc


def to_rgb(image: Image.Image) -> Image.Image:
    """``image.convert("RGB")``, as timm's loader does; an :class:`ImageError` where Pillow cannot."""
    return to_mode(image, "RGB")


def open_image(path: str | os.PathLike[str], mode: str = "RGB") -> Image.Image:
    """Open and decode an image file to ``mode`` (RGB, or L for a grayscale model; see :func:`image_mode`),
    as timm's ``ImageDataset`` does.

    Raises :class:`ImageError` naming the file for a missing, unreadable,
    truncated or unsupported file.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert(mode) if img.mode != mode else img.copy()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file. Check the path.") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image file.") from None
    except Image.UnidentifiedImageError:
        raise ImageError(
            f"{path}: not an image Pillow can read. Remove it, or convert it to JPEG or PNG."
        ) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(
            f"{path}: cannot be decoded ({type(exc).__name__}: {exc}). The file is corrupt or truncated: "
            "re-download or re-encode it, or remove it."
        ) from None


def _as_items(images: Any) -> list[Any]:
    """Flatten ``images`` into a list of single images (paths, PIL images, arrays)."""
    if isinstance(images, (str, os.PathLike)):
        return _expand_path(Path(images))
    if isinstance(images, Image.Image):
        return [images]
    if isinstance(images, np.ndarray) or (hasattr(images, "__array__") and not isinstance(images, (list, tuple))):
        array = np.asarray(images)
        if array.ndim == 4:
            return list(array)
        return [array]
    try:
        items = list(images)
    except TypeError:
        raise ImageError(
            f"cannot preprocess a {type(images).__name__}: pass file paths, PIL images or HxWx3 uint8 arrays"
        ) from None
    out: list[Any] = []
    for item in items:
        if isinstance(item, (str, os.PathLike)):
            out.extend(_expand_path(Path(item)))
        else:
            out.append(item)
    return out


def _expand_path(path: Path) -> list[Any]:
    if path.is_dir():
        return list(find_images(path))
    return [path]


def _to_pil(item: Any, mode: str = "RGB") -> Image.Image:
    if isinstance(item, Path):
        return open_image(item, mode)
    if isinstance(item, Image.Image):
        return to_mode(item, mode)
    if isinstance(item, np.ndarray) or hasattr(item, "__array__"):
        return to_mode(_array_to_pil(np.asarray(item)), mode)
    raise ImageError(
        f"cannot preprocess a {type(item).__name__}: pass file paths, PIL images or HxWx3 uint8 arrays"
    )


def check_pixels(array: np.ndarray) -> np.ndarray:
    """An image array as the package takes it: uint8, HxW (HxWx1 squeezed), HxWx3 or HxWx4, with pixels.

    Raises :class:`ImageError` naming the fix; the one rule for ``preprocess`` and the embedded graph's feed.
    """
    if array.dtype != np.uint8:
        raise ImageError(
            f"an image array must be uint8 (0..255), got {array.dtype}. For floats in 0..1 pass "
            "(array * 255).round().astype(numpy.uint8)."
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ImageError(
            f"an image array must be HxWx3 (or HxW, HxWx4), got shape {array.shape}. "
            "A CHW array needs array.transpose(1, 2, 0)."
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"an image array of shape {array.shape} has no pixels")
    return array


def _array_to_pil(array: np.ndarray) -> Image.Image:
    array = check_pixels(array)
    return Image.fromarray(np.ascontiguousarray(array))
