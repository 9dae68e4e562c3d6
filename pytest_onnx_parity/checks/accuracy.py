"""What the real photos say, tallied batch by batch: top-1 agreement over every photo (a swap between classes
torch itself can barely tell apart is a near tie, not a disagreement), accuracy on a labelled folder, and
the one accuracy rule of the package (:func:`accuracy_problem`), used by the real_images check and by the
int8 verdict. Accuracy adds to the end-to-end comparison, never replaces it: a file that disagrees with
torch is not right because it happened to score higher on the labels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

#: the outputs of this many photos are kept for the logits and top-k comparison (all of a plain folder this size)
KEEP_IMAGES = 128


def accuracy_problem(torch_top1: float, file_top1: float, max_drop: float, *, what: str = "ONNX") -> str | None:
    """The one accuracy rule: the file's top-1 accuracy (percent) may differ from torch's by at most ``max_drop``
    percentage points, either way. Scoring higher is a disagreement with the model, never evidence."""
    drop = torch_top1 - file_top1
    if drop > max_drop + 1e-9:
        return (f"{what} top-1 accuracy {file_top1:.3f}% is {drop:.3f} pp below torch's {torch_top1:.3f}% "
                f"(at most {max_drop:g} pp allowed)")
    if -drop > max_drop + 1e-9:
        return (f"{what} scores {-drop:.3f} pp higher than torch ({file_top1:.3f}% against {torch_top1:.3f}%): a file "
                "that computes what the model computes cannot; the two disagree on these photos, and a higher score "
                "on a few labels is no evidence that the file is right")
    return None


def vacuous_accuracy(random_weights: bool, torch_top1: float, max_drop: float) -> str | None:
    """Why an accuracy verdict on a labelled folder could not fail, or None when it can: with random weights both
    sides score at chance; and ONNX can be worse than torch by at most torch's own top-1."""
    if random_weights:
        return "random weights score at chance on both sides, so a drop in accuracy means nothing"
    if torch_top1 <= max_drop:
        return (f"torch's own top-1 is {torch_top1:.3f}%, not above the allowed drop ({max_drop:g} pp), so ONNX "
                "could not fall further (do the labels match the model's classes?)")
    return None


@dataclass
class PhotoTally:
    """Streams of both sides' outputs on the photos: the first :data:`KEEP_IMAGES` kept whole, per photo only
    what top-1 agreement and accuracy need (the two top-1 classes, torch's logits at both, the label)."""

    targets: Sequence[int] | None = None  # class index per photo, in stream order (a labelled folder)
    keep: int = KEEP_IMAGES
    kept_expected: list[np.ndarray] = field(default_factory=list)
    kept_actual: list[np.ndarray] = field(default_factory=list)
    first_x: np.ndarray | None = None
    max_input_diff: float | None = None
    images: int = 0
    sizes: set = field(default_factory=set)  # the photos' own sizes, when they went in as pixels (embedded)
    _t1: list[np.ndarray] = field(default_factory=list)  # torch's top-1 per photo
    _a1: list[np.ndarray] = field(default_factory=list)  # the file's
    _gap: list[np.ndarray] = field(default_factory=list)  # torch's logit at its class minus at the file's
    _ref: list[np.ndarray] = field(default_factory=list)  # the larger magnitude of those two logits
    _hits: dict[str, np.ndarray] = field(default_factory=lambda: {"torch": np.zeros(2), "onnx": np.zeros(2)})

    def add(self, x: np.ndarray, expected: np.ndarray, actual: np.ndarray, input_diff: float | None,
            classes: bool) -> None:
        if self.first_x is None:
            self.first_x = x
        if input_diff is not None:
            self.max_input_diff = max(self.max_input_diff or 0.0, input_diff)
        if sum(len(e) for e in self.kept_expected) < self.keep:
            self.kept_expected.append(expected)
            self.kept_actual.append(actual)
        if classes:
            self._classes(expected, actual)
        self.images += len(expected)

    def _classes(self, e: np.ndarray, a: np.ndarray) -> None:
        e64 = e.astype(np.float64)
        t1, a1 = e64.argmax(-1), a.argmax(-1)
        rows = np.arange(len(e64))
        self._t1.append(t1)
        self._a1.append(a1)
        self._gap.append(e64[rows, t1] - e64[rows, a1])
        self._ref.append(np.maximum(np.abs(e64[rows, t1]), np.abs(e64[rows, a1])))
        if self.targets is not None:
            y = np.asarray(self.targets[self.images:self.images + len(e)])
            for side, logits in (("torch", e), ("onnx", a)):
                top5 = np.argsort(-logits, axis=-1)[:, :5]
                self._hits[side][0] += float((top5[:, 0] == y).sum())
                self._hits[side][1] += float((top5 == y[:, None]).any(-1).sum())

    @property
    def expected(self) -> np.ndarray:
        return np.concatenate(self.kept_expected)

    @property
    def actual(self) -> np.ndarray:
        return np.concatenate(self.kept_actual)

    def top1(self, atol: float, rtol: float) -> dict[str, Any]:
        """Top-1 agreement over every photo: ``agreement`` counts near ties (torch's two logits within two
        tolerances of each other) as agreeing, ``exact`` does not; ``disagreements``: the photos that differ."""
        t1, a1 = np.concatenate(self._t1), np.concatenate(self._a1)
        gap, ref = np.concatenate(self._gap), np.concatenate(self._ref)
        differ = t1 != a1
        tie = differ & (gap <= 2 * (atol + rtol * ref))
        n = len(t1)
        return {"images": n, "exact": float((~differ).mean()) if n else 1.0,
                "agreement": float((~differ | tie).mean()) if n else 1.0, "near_ties": int(tie.sum()),
                "disagreements": [int(i) for i in np.flatnonzero(differ & ~tie)][:20]}

    def accuracy(self) -> dict[str, float]:
        n = max(self.images, 1)
        return {"torch_top1": 100 * self._hits["torch"][0] / n, "torch_top5": 100 * self._hits["torch"][1] / n,
                "onnx_top1": 100 * self._hits["onnx"][0] / n, "onnx_top5": 100 * self._hits["onnx"][1] / n}
