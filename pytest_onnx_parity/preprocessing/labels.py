"""Which class each photo of a labelled folder belongs to, by the rules a timm user's folders follow.

A folder is labelled when every image lies in a direct sub-folder of it, and the sub-folders name
classes by one of these rules, tried in order:

1. a labels file (``--onnx-parity-labels FILE``, timm's ``--class-map`` format: one class name a
   line, in index order): each sub-folder is the class of that name;
2. ImageNet-1k synsets (``n01440764``), for a 1000-class head (or a head not known);
3. class indices (``0``, ``1``, ...) below the head's class count;
4. class names as timm's ``train.py`` reads an ImageFolder (sub-folder names in natural sort
   order are the indices 0, 1, ...), when there are exactly as many sub-folders as the head has
   classes.

Anything else is not labelled, and :func:`read_labels` says why (the checks say it in their
message and on the terminal). Nothing here imports torch; timm only for ImageNet's synsets.
"""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ImageError
from .imagefiles import find_images

_SYNSET = re.compile(r"n\d{8}")
_INDEX = re.compile(r"\d+")
LABELS_FIX = ("name the class sub-folders by ImageNet synset or class index, or give --onnx-parity-labels FILE (one class "
              "name a line, in index order: timm's --class-map format)")


@dataclass
class Labels:
    """A folder's photos and their class indices; ``rule`` says how the folders were read."""

    items: list[tuple[Path, int]]
    rule: str
    names: list[str] | None = None  # class names by index, when the folders or the labels file give them

    @property
    def paths(self) -> list[Path]:
        return [p for p, _ in self.items]

    @property
    def targets(self) -> list[int]:
        return [y for _, y in self.items]


@dataclass
class Unlabelled:
    """A folder read as plain photos; ``why``: why no accuracy can be judged on it."""

    paths: list[Path]
    why: str
    folders: list[str] = field(default_factory=list)


def natural_key(text: str) -> list[object]:
    """timm's sort key for class folders (``timm.utils.misc.natural_key``): ``class2`` before ``class10``."""
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", text.lower())]


def read_class_map(path: str | os.PathLike[str]) -> list[str]:
    """The class names of a labels file, in index order (one a line; blank lines ignored)."""
    p = Path(path).expanduser()
    try:
        names = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise ImageError(f"cannot read the labels file {p}: {exc.strerror or exc}. Give a text file with one class name "
                         "a line, in index order (timm's --class-map format).") from None
    if not names:
        raise ImageError(f"the labels file {p} names no class: write one class name a line, in index order")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ImageError(f"the labels file {p} names {', '.join(dup[:5])} more than once: each class once, in index order")
    return names


def read_labels(directory: str | os.PathLike[str], *, num_classes: int | None = None,
                labels_file: str | os.PathLike[str] | None = None) -> Labels | Unlabelled:
    """The photos of ``directory`` with their classes (:class:`Labels`), or :class:`Unlabelled` saying why not.

    ``num_classes``: the model's head (None: unknown, as for a 1000-class ImageNet head).
    """
    root = Path(directory)
    paths = find_images(root)
    by_class: dict[str, list[Path]] = {}
    for path in paths:
        parts = path.relative_to(root).parts
        if len(parts) != 2:
            where = "at the top level" if len(parts) == 1 else "deeper than one sub-folder"
            return Unlabelled(paths, f"a plain folder of photos (some lie {where}, e.g. {path.relative_to(root)}), "
                              "not one sub-folder per class")
        by_class.setdefault(parts[0], []).append(path)
    folders = sorted(by_class, key=natural_key)
    label = _rule(folders, num_classes, labels_file)
    if isinstance(label, str):
        return Unlabelled(paths, label, folders)
    index, rule, names = label
    return Labels([(p, index[p.relative_to(root).parts[0]]) for p in paths], rule, names)


def _rule(folders: list[str], num_classes: int | None,
          labels_file: str | os.PathLike[str] | None) -> tuple[dict[str, int], str, list[str] | None] | str:
    """``(folder -> index, rule, names)`` by the first rule that fits, or why none does."""
    shown = ", ".join(folders[:5]) + (f" and {len(folders) - 5} more" if len(folders) > 5 else "")
    if labels_file is not None:
        names = read_class_map(labels_file)
        if num_classes is not None and len(names) != num_classes:
            return (f"the labels file {labels_file} names {len(names)} classes, the model's head has {num_classes}: "
                    "one class name a line, for every class of the head, in index order")
        missing = [f for f in folders if f not in names]
        if missing:
            return (f"the class folders {', '.join(missing[:5])} are not in the labels file {labels_file} "
                    f"({len(names)} names, e.g. {', '.join(names[:3])})")
        return {f: names.index(f) for f in folders}, f"labels file {labels_file}", names
    if all(_SYNSET.fullmatch(n) for n in folders) and num_classes in (None, 1000):
        index_of = _imagenet_synset_index()
        unknown = [n for n in folders if n not in index_of]
        if not unknown:
            return {n: index_of[n] for n in folders}, "ImageNet-1k synsets", None
        return f"the synsets {', '.join(unknown[:5])} are not ImageNet-1k classes; {LABELS_FIX}"
    limit = num_classes if num_classes is not None else 1000
    if all(_INDEX.fullmatch(n) for n in folders):
        if all(int(n) < limit for n in folders):
            return {n: int(n) for n in folders}, "class indices", None
        return f"class-index folders reach {max(map(int, folders))}, the model's head has {limit} classes"
    if num_classes is not None and len(folders) == num_classes:
        return ({n: i for i, n in enumerate(folders)}, "class names in sorted order, as timm's train.py reads an "
                "ImageFolder", list(folders))
    heads = f"the model's head has {num_classes} classes" if num_classes is not None else "the model's head is not known"
    return (f"{len(folders)} class folders ({shown}) fit no labelling rule ({heads}; class names are read as timm's "
            f"train.py reads them only when there is one folder per class of the head); {LABELS_FIX}")


@functools.lru_cache(maxsize=1)
def _imagenet_synset_index() -> dict[str, int]:
    """ImageNet-1k synset -> class index, from timm's own ``ImageNetInfo``."""
    import timm.data

    return {synset: i for i, synset in enumerate(timm.data.ImageNetInfo("imagenet-1k").label_names())}
