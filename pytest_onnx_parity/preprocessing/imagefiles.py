"""Which files are images, and how a folder of them is found: one rule for options and runs.

Free of PIL and numpy; used by the option parser (to refuse a folder before a run)
and by :mod:`.images` and :mod:`.transform` (to read it).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ImageError

#: File name endings (case-insensitive) that count as images.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def find_images(directory: str | os.PathLike[str]) -> list[Path]:
    """Every image file below ``directory``, recursively.

    Images are files whose name ends in one of :data:`IMAGE_SUFFIXES`
    (any case). Hidden files and folders (names starting with ``.``) are
    skipped; symbolic links are followed. The order is that of the paths
    relative to ``directory``, compared as POSIX strings, so it is the same
    on every machine. A folder that does not exist, is not a folder or holds
    no images raises :class:`ImageError`.
    """
    root = Path(directory)
    if not root.exists():
        raise ImageError(f"image folder {root} does not exist. Pass an existing folder of images (--onnx-parity-images).")
    if not root.is_dir():
        raise ImageError(f"image folder {root} is not a folder. Pass a folder that holds image files.")
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            path = Path(dirpath) / name
            found.append((path.relative_to(root).as_posix(), path))
    if not found:
        raise ImageError(
            f"image folder {root} holds no images (looked recursively for "
            f"{', '.join(IMAGE_SUFFIXES)}). Put images in it, or pass another folder."
        )
    return [path for _, path in sorted(found)]


def bad_files_message(problems: list[str]) -> str:
    """One message for every image that could not be read (nothing is skipped silently)."""
    if len(problems) == 1:
        return problems[0]
    lines = "\n".join(f"  {p}" for p in problems)
    return f"{len(problems)} images cannot be read:\n{lines}"
