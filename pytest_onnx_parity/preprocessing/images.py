"""Real images: the bundled sample photos, user folders, labelled ImageFolder trees.

* :func:`bundled_image_paths`: four downscaled public-domain / CC0 photos
  shipped inside the package (cat, coffee, astronaut, rocket; see
  ``data/SOURCES.md``, kept beside ``data/images/`` so that folder holds
  images only), the default real batch.
* :func:`find_images`: every image file below a folder, recursively, in a
  deterministic order.
* :func:`load_images`: decode files, failing once with every unreadable file listed.
* :func:`model_image_mode`: the PIL mode a model's images are decoded to (RGB, or L for a 1-channel model).
* :func:`labelled_folder`: ImageNet labels of an ImageFolder-style tree.
* :func:`real_batch` and :func:`iter_batches`: preprocessed batches of them.

Nothing here imports torch; timm is imported only by :func:`labelled_folder`,
for its list of ImageNet-1k synsets.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

from ..errors import ImageError
from .decode import image_mode, open_image
from .imagefiles import IMAGE_SUFFIXES, bad_files_message, find_images
from .transform import ConfigLike, EvalTransform, preprocess

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    from PIL import Image

__all__ = [
    "IMAGE_EXTENSIONS",
    "bundled_image_paths",
    "find_images",
    "iter_batches",
    "labelled_folder",
    "load_images",
    "model_image_mode",
    "real_batch",
]

#: File name endings (case-insensitive) that count as images.
IMAGE_EXTENSIONS = IMAGE_SUFFIXES
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "data" / "images"

def bundled_image_paths() -> list[Path]:
    """The sample photos shipped with the package, sorted by file name."""
    paths = sorted(p for p in BUNDLED_DIR.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:  # a broken install, not a user error
        raise ImageError(
            f"the bundled sample photos are missing from {BUNDLED_DIR}. Reinstall pytest-onnx-parity, "
            "or pass your own folder with --onnx-parity-images DIR."
        )
    return paths


def gate_image_paths(folder: str | os.PathLike[str] | None) -> list[Path]:
    """The photos a gate item runs on: every image below ``folder`` (``--onnx-parity-images``, see
    :func:`find_images`, which says what is wrong with a bad folder), else the bundled sample photos."""
    return find_images(folder) if folder else bundled_image_paths()


def load_images(paths: Iterable[str | os.PathLike[str]], mode: str = "RGB") -> list["Image.Image"]:
    """Decode every file to a PIL image of ``mode``, as timm's loader does: RGB, or ``"L"`` for a
    grayscale model (:func:`~.decode.image_mode` of its data config says which).

    Every file is tried; if any cannot be read, one :class:`ImageError`
    lists all of them (nothing is skipped silently).
    """
    images: list[Image.Image] = []
    problems: list[str] = []
    for path in paths:
        try:
            images.append(open_image(path, mode))
        except ImageError as exc:
            problems.append(str(exc))
    if problems:
        raise ImageError(bad_files_message(problems))
    return images


def model_image_mode(model: object) -> str:
    """The PIL mode timm's loader decodes images to for ``model``: ``"RGB"``, or ``"L"`` when its resolved
    data config takes 1 channel (``input_size[0]``, as timm's ``train.py`` sets ``input_img_mode``).

    The torch side of a real-image check opens its files with it, :func:`~.transform.preprocess` takes
    the same rule from its config (:func:`~.decode.image_mode`), and random weights are calibrated on
    photos decoded with it. ``model`` is what
    :func:`~.dataconfig.resolve_data_config` takes (a module, a LoadedModel or a spec string).
    """
    from .dataconfig import resolve_data_config

    return image_mode(resolve_data_config(model))  # type: ignore[arg-type]


def labelled_folder(directory: str | os.PathLike[str], *, num_classes: int | None = None,
                    labels_file: str | os.PathLike[str] | None = None) -> list[tuple[Path, int]] | None:
    """``(path, class index)`` for every image of an ImageFolder-style tree, or None when the folder is not
    labelled by any rule of :mod:`.labels` (ImageNet synsets, class indices, a labels file, or class names in
    timm train.py's order for a head of that many classes). Paths come in :func:`find_images` order."""
    from .labels import Labels, read_labels

    found = read_labels(directory, num_classes=num_classes, labels_file=labels_file)
    return found.items if isinstance(found, Labels) else None


def real_batch(
    config: ConfigLike,
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    *,
    test_time: bool = False,
) -> tuple["np.ndarray", list[Path]]:
    """A preprocessed batch of real photos and the paths it came from.

    ``images`` is ``None`` (the bundled sample photos), a folder (every image
    below it, see :func:`find_images`) or a list of image files. ``config``
    is what :func:`~pytest_onnx_parity.preprocessing.transform.preprocess` takes. Returns
    ``(array, paths)``, the array float32 NCHW in ``paths`` order.
    """
    paths = _resolve_paths(images)
    return preprocess(paths, config, test_time=test_time), paths


def iter_batches(
    paths: Sequence[str | os.PathLike[str]],
    config: ConfigLike,
    *,
    batch_size: int = 32,
    workers: int | None = None,
    test_time: bool = False,
) -> Iterator[tuple["np.ndarray", list[Path]]]:
    """Stream ``(array, paths)`` batches of preprocessed images, decoding on ``workers`` threads.

    Memory holds a batch or two at a time, so a folder of 50,000 images
    streams in constant memory. Pillow releases the GIL while decoding and
    resizing, so threads use several cores. A batch holding unreadable files
    raises one :class:`ImageError` listing them all.
    """
    import numpy as np

    transform = EvalTransform.from_config(config, test_time=test_time)
    paths = [Path(p) for p in paths]
    workers = workers or min(4, os.cpu_count() or 1)

    def one(path: Path) -> "np.ndarray | str":
        try:
            return transform(open_image(path, transform.mode))
        except ImageError as exc:
            return str(exc)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            results = list(pool.map(one, chunk))
            problems = [r for r in results if isinstance(r, str)]
            if problems:
                raise ImageError(bad_files_message(problems))
            yield np.stack(results), chunk  # type: ignore[arg-type]


def _resolve_paths(images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None) -> list[Path]:
    if images is None:
        return bundled_image_paths()
    if isinstance(images, (str, os.PathLike)):
        path = Path(images)
        return find_images(path) if path.is_dir() or not path.exists() else [path]
    return [Path(p) for p in images]

