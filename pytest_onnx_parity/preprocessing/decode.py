"""What a user hands ``preprocess``, decoded as timm's loader decodes it: paths, folders, PIL images and
arrays, each turned into an RGB PIL image (every unreadable file named in one :class:`ImageError`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ImageError
from .imagefiles import find_images


def to_rgb(image: Image.Image) -> Image.Image:
    """``image.convert("RGB")``, as timm's loader does; an :class:`ImageError` where Pillow cannot."""
    if image.mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageError(
            f"cannot convert a PIL image of mode {image.mode!r} to RGB ({exc}). "
            "Convert it to RGB yourself before passing it."
        ) from exc


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open and decode an image file to RGB, as timm's ``ImageDataset`` does.

    Raises :class:`ImageError` naming the file for a missing, unreadable,
    truncated or unsupported file.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB") if img.mode != "RGB" else img.copy()
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


def _to_pil(item: Any) -> Image.Image:
    if isinstance(item, Path):
        return open_image(item)
    if isinstance(item, Image.Image):
        return to_rgb(item)
    if isinstance(item, np.ndarray) or hasattr(item, "__array__"):
        return to_rgb(_array_to_pil(np.asarray(item)))
    raise ImageError(
        f"cannot preprocess a {type(item).__name__}: pass file paths, PIL images or HxWx3 uint8 arrays"
    )


def _array_to_pil(array: np.ndarray) -> Image.Image:
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
    return Image.fromarray(np.ascontiguousarray(array))
