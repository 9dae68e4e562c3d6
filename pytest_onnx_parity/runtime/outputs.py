"""What a model returns, decided once: class logits, a pooled embedding, or features.

The one rule, :func:`output_kind`, on torch's forward output:

* a list or tuple of tensors (``features_only=True`` backbones) -> ``features``;
* one tensor of rank > 2 (``global_pool=''``: unpooled maps) -> ``features``;
* one tensor of rank 2 and ``model.num_classes == 0`` -> ``embedding``;
* else (one (N, C) tensor of a classifier, of any C) -> ``logits``.

Every check sees both sides as one (N, D) float32 array: each output flattened per sample
and the outputs concatenated in order (:func:`flatten`). An :class:`OutputLayout` says
where each output lies in it (a :class:`Segment`: its index, shape, offset and size), so a
check compares output by output, each with a tolerance of its own magnitude, and names the
output it finds different (``output 1 (N, 112, 14, 14)``). A classifier's or an embedding's
layout is one segment, and the flat array is its output itself.

Also here: the names the exporter gives the outputs of each kind (:func:`export_output_names`),
and the one place class names come from (:func:`label_names`).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

#: the kinds of model output the checks know (``ParityResult.output_kind``)
OUTPUT_KINDS = ("logits", "embedding", "features")


@dataclass(frozen=True)
class Segment:
    """One output of the model inside the flat (N, D) array: columns ``offset`` to ``offset + size``."""

    index: int
    shape: tuple[int, ...]  # per sample, without the batch axis
    offset: int
    size: int

    @property
    def label(self) -> str:
        """How messages name it: ``output 1 (N, 112, 14, 14)``."""
        return f"output {self.index} ({', '.join(['N', *map(str, self.shape)])})"

    def take(self, flat: np.ndarray) -> np.ndarray:
        """This output's columns of a flat (N, D) array."""
        return flat[:, self.offset:self.offset + self.size]


@dataclass(frozen=True)
class OutputLayout:
    """The kind of a model's output and where each of its outputs lies in the flat array."""

    kind: str
    segments: tuple[Segment, ...]

    @property
    def width(self) -> int:
        return sum(s.size for s in self.segments)

    @property
    def shapes(self) -> str:
        """The outputs, as messages list them: ``output 0 (N, 40, 28, 28), output 1 (N, 112, 14, 14)``."""
        return ", ".join(s.label for s in self.segments)

    def describe(self) -> str:
        """One phrase: ``class logits (N, 10)``, ``an embedding (N, 512)``, ``features: 3 outputs (...)``."""
        if self.kind == "logits":
            return f"class logits (N, {self.width})"
        if self.kind == "embedding":
            return f"an embedding (N, {self.width})"
        n = len(self.segments)
        return f"features: {n} output{'s' if n != 1 else ''} ({self.shapes})"

    def parts(self, flat: np.ndarray) -> list[tuple[Segment, np.ndarray]]:
        """Each segment with its columns of ``flat``."""
        return [(s, s.take(flat)) for s in self.segments]

    def mismatch(self, arrays: Sequence[np.ndarray], names: Sequence[str] = ()) -> str | None:
        """Why ``arrays`` (ONNX Runtime's outputs, in order) do not have this layout's shapes, or None."""
        if len(arrays) != len(self.segments):
            return (f"the file gives {len(arrays)} output(s); the torch model returns {len(self.segments)} "
                    f"({self.shapes})")
        for seg, arr, name in zip(self.segments, arrays, [*names, *[""] * len(arrays)]):
            if tuple(arr.shape[1:]) != seg.shape:
                called = f" {name!r}" if name else ""
                return (f"the file's output {seg.index}{called} gives shape {tuple(arr.shape)}; torch's {seg.label} "
                        f"has shape {(arr.shape[0], *seg.shape)}")
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "outputs": [{"index": s.index, "shape": list(s.shape), "offset": s.offset,
                                                 "size": s.size} for s in self.segments]}


def output_kind(out: Any, num_classes: Any) -> str:
    """The kind of a forward output ``out`` (a tensor or array, or a list/tuple of them): see the module docstring."""
    if isinstance(out, (list, tuple)):
        return "features"
    if len(out.shape) > 2:
        return "features"
    if len(out.shape) == 2 and num_classes == 0:
        return "embedding"
    return "logits"


def output_arrays(out: Any, *, double: bool = False) -> list[np.ndarray]:
    """torch's forward output (a tensor, or a list/tuple of them) as numpy arrays, float32 (float64 with ``double``)."""
    items = out if isinstance(out, (list, tuple)) else [out]
    arrays = []
    for t in items:
        if hasattr(t, "detach"):
            t = t.detach().cpu()
            t = t.double() if double else t.float()
            arrays.append(t.numpy())
        else:
            arrays.append(np.asarray(t, dtype=np.float64 if double else np.float32))
    return arrays


def flatten(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Each output flattened per sample, concatenated in order: one (N, D) array (an (N, C) output as it is)."""
    if len(arrays) == 1 and arrays[0].ndim == 2:
        return arrays[0]
    n = arrays[0].shape[0] if arrays and arrays[0].ndim else 1
    return np.concatenate([np.asarray(a).reshape(n, -1) for a in arrays], axis=1)


def layout_of(out: Any, num_classes: Any) -> OutputLayout:
    """The layout of a forward output ``out`` (as :func:`output_kind` takes it)."""
    items = out if isinstance(out, (list, tuple)) else [out]
    segments, offset = [], 0
    for i, t in enumerate(items):
        shape = tuple(int(d) for d in tuple(t.shape)[1:])
        size = int(np.prod(shape)) if shape else 1
        segments.append(Segment(i, shape, offset, size))
        offset += size
    return OutputLayout(output_kind(out, num_classes), tuple(segments))


def export_output_names(kind: str, count: int) -> list[str]:
    """The names an export gives the outputs: ``logits``, ``embedding``, or ``features_0``, ``features_1``, ..."""
    if kind == "features":
        return [f"features_{i}" for i in range(count)]
    return ["embedding" if kind == "embedding" else "logits"]


def label_names(model: Any, num_classes: int | None = None) -> list[str] | None:
    """The class names of a classifier's ``num_classes`` logits (default: ``model.num_classes``), or None.

    The first of: ``model.pretrained_cfg["label_names"]`` (timm's loader sets it from a config.json's
    ``label_names``), timm's ImageNet class descriptions when the head's size is that of an ImageNet subset timm knows (1000: in1k;
    21841/21843: in22k; ...). Names whose count is not the head's size are not used.
    """
    n = num_classes if num_classes is not None else getattr(model, "num_classes", None)
    if not isinstance(n, int) or n <= 0:
        return None
    cfg = getattr(model, "pretrained_cfg", None)
    names = cfg.get("label_names") if isinstance(cfg, dict) else None
    if names is not None:
        names = [str(x) for x in names]
        return names if len(names) == n else None
    return _imagenet_names(n)


@lru_cache(maxsize=4)
def _imagenet_names(n: int) -> list[str] | None:
    try:
        import timm.data
    except ImportError:  # pragma: no cover - timm is a dependency
        return None
    subset = timm.data.infer_imagenet_subset({"num_classes": n})
    if subset is None:
        return None
    info = timm.data.ImageNetInfo(subset)
    return list(info.label_descriptions()) if info.num_classes() == n else None


def class_name(index: int, names: Sequence[str] | None) -> str:
    """``3 'tabby cat'`` when names are known, else ``3``."""
    return f"{index} {names[index]!r}" if names is not None and 0 <= index < len(names) else str(index)
