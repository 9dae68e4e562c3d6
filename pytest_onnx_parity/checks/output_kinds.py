"""How the checks compare outputs of each kind (:mod:`..runtime.outputs`): logits, embeddings, features.

Both sides come as flat (N, D) arrays with a layout. :func:`compare_outputs` compares each
output element-wise with a tolerance of its own magnitude (the logits rule,
:mod:`..tolerances`); an embedding also by the cosine similarity of each sample
(:data:`~..tolerances.MIN_COSINE`) and by nearest-neighbour agreement across the samples
(judged from :data:`~..tolerances.MIN_NEIGHBOUR_SAMPLES` samples on; a changed neighbour whose
torch similarities differ by less than :func:`~..tolerances.neighbour_tie` is a near tie,
reported, not failed). A classifier's comparison is its logits comparison, word for word.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..tolerances import MIN_NEIGHBOUR_SAMPLES, min_cosine, neighbour_tie

if TYPE_CHECKING:  # pragma: no cover
    from ..compare import LogitsComparison
    from ..results import CheckResult
    from ..runtime.outputs import OutputLayout, Segment
    from ..tolerances import Tolerance

#: the tolerance of one output, from its torch values (a run's rule: tolerances.logits_tolerance with its options)
ToleranceRule = Callable[[np.ndarray], "Tolerance"]


def cosine_per_sample(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """The cosine similarity of each row of ``actual`` to the same row of ``expected`` (1 where both are zero)."""
    e, a = expected.astype(np.float64), actual.astype(np.float64)
    e, a = np.where(np.isfinite(e), e, 0.0), np.where(np.isfinite(a), a, 0.0)
    ne, na = np.linalg.norm(e, axis=1), np.linalg.norm(a, axis=1)
    dot = (e * a).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = dot / (ne * na)
    return np.where((ne == 0) & (na == 0), 1.0, np.where((ne == 0) | (na == 0), 0.0, cos))


@dataclass
class Neighbours:
    """Nearest-neighbour agreement across a batch (cosine similarity); ``agreement`` None: not judged (``note``)."""

    samples: int
    tie: float
    agreement: float | None = None
    disagreements: list[dict[str, Any]] = field(default_factory=list)
    near_ties: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    @property
    def passed(self) -> bool:
        return not self.disagreements

    def sentence(self) -> str:
        if self.agreement is None:
            return f"nearest neighbour not judged: {self.note}"
        text = (f"nearest neighbour the same for {self.agreement:.0%} of {self.samples} samples, "
                f"{len(self.near_ties)} near-tie swap(s) not counted")
        for d in self.disagreements[:5]:
            text += (f"\n  sample {d['sample']}: torch's nearest is sample {d['torch']}, ONNX's sample {d['onnx']} "
                     f"(torch similarity gap {d['gap']:.3g}, near-tie tolerance {self.tie:.3g})")
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "agreement": self.agreement, "tie_tolerance": self.tie,
                "disagreements": self.disagreements[:10], "near_ties": self.near_ties[:10], "note": self.note}


def nearest_neighbours(expected: np.ndarray, actual: np.ndarray, tie: float) -> Neighbours:
    """For each sample, its nearest other sample under torch against that under ONNX Runtime."""
    n = expected.shape[0]
    if n < MIN_NEIGHBOUR_SAMPLES:
        return Neighbours(n, tie, note=f"a batch of {n} gives each sample {'one other' if n == 2 else 'no other'}, "
                                      f"so no neighbour can change (needs at least {MIN_NEIGHBOUR_SAMPLES} samples)")

    def similarities(x: np.ndarray) -> np.ndarray:
        x = np.where(np.isfinite(x), x, 0.0).astype(np.float64)
        unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
        s = unit @ unit.T
        np.fill_diagonal(s, -np.inf)
        return s

    se, sa = similarities(expected), similarities(actual)
    ne, na = se.argmax(axis=1), sa.argmax(axis=1)
    out = Neighbours(n, tie)
    for i in np.flatnonzero(ne != na):
        gap = float(se[i, ne[i]] - se[i, na[i]])
        entry = {"sample": int(i), "torch": int(ne[i]), "onnx": int(na[i]), "gap": gap}
        (out.near_ties if gap <= tie else out.disagreements).append(entry)
    out.agreement = 1.0 - len(out.disagreements) / n
    return out


@dataclass
class OutputsComparison:
    """One comparison of both sides' outputs: per output, and for an embedding cosine and neighbours."""

    layout: "OutputLayout"
    parts: list[tuple["Segment", "LogitsComparison"]]
    cosine: np.ndarray | None = None  # per sample (an embedding)
    min_cosine: float | None = None
    neighbours: Neighbours | None = None

    @property
    def cosine_passed(self) -> bool:
        return self.cosine is None or bool((self.cosine >= self.min_cosine - 1e-12).all())

    @property
    def passed(self) -> bool:
        return (all(c.passed for _, c in self.parts) and self.cosine_passed
                and (self.neighbours is None or self.neighbours.passed))

    @property
    def max_abs_diff(self) -> float:
        return max((c.max_abs_diff for _, c in self.parts), default=0.0)

    @property
    def expected_nonfinite(self) -> int:
        return sum(c.expected_nonfinite for _, c in self.parts)

    def worst(self) -> tuple["Segment", "LogitsComparison"]:
        """The output furthest out of its tolerance (the first one when none is out)."""
        failing = [p for p in self.parts if not p[1].passed] or self.parts[:1]
        return max(failing, key=lambda p: p[1].max_abs_diff / max(p[1].atol, 1e-300))

    def message(self, title: str) -> str:
        """What was compared; a failure leads with the title and what failed (each failing output by name)."""
        kind = self.layout.kind
        if kind == "logits":
            return self.parts[0][1].message(title)
        failed: list[str] = []
        fine: list[str] = []
        for seg, cmp in self.parts:
            where = seg.label if kind == "features" else "embedding"
            if cmp.passed:
                fine.append(f"{where} close: max abs diff {cmp.max_abs_diff:.3g} (atol {cmp.atol:.3g}, rtol {cmp.rtol:.3g})"
                            + (f"; note: {cmp.problem}" if cmp.problem else ""))
            else:  # one output of several is named; an embedding's comparison is the whole message's
                failed.append(cmp.message(f"{where}: not close!") if kind == "features" else
                              "\n".join(cmp.message(title).splitlines()[2:]))
        if self.cosine is not None:
            worst = int(np.argmin(self.cosine)) if self.cosine.size else 0
            low = np.flatnonzero(self.cosine < self.min_cosine - 1e-12)
            least = float(self.cosine.min()) if self.cosine.size else 1.0
            shown = f"1 - {1.0 - least:.2g}" if 0.999 < least < 1.0 else f"{least:.6g}"
            if low.size:
                failed.append(f"Cosine similarity below {self.min_cosine:g} for {low.size} of {self.cosine.size} samples: "
                              + ", ".join(f"sample {i} {self.cosine[i]:.6g}" for i in low[:5]))
            else:
                fine.append(f"cosine similarity per sample at least {shown} (sample {worst}); "
                            f"at least {self.min_cosine:g} required" if self.cosine.size else "no samples")
        if self.neighbours is not None:
            (fine if self.neighbours.passed else failed).append(self.neighbours.sentence())
        return "\n".join(([title, ""] + failed + [""] if failed else []) + fine).rstrip()

    def to_dict(self) -> dict[str, Any]:
        if self.layout.kind == "logits":
            return self.parts[0][1].to_dict()
        out: dict[str, Any] = {"passed": self.passed, "max_abs_diff": self.max_abs_diff,
                               "expected_nonfinite": self.expected_nonfinite, "output_layout": self.layout.to_dict(),
                               "outputs": [{"output": s.label, "offset": s.offset, "size": s.size, **c.to_dict()}
                                           for s, c in self.parts]}
        if len(self.parts) == 1:
            out.update(atol=self.parts[0][1].atol, rtol=self.parts[0][1].rtol)
        if self.cosine is not None:
            out.update(cosine_min=float(self.cosine.min()) if self.cosine.size else None, min_cosine=self.min_cosine,
                       cosine=[float(c) for c in self.cosine[:16]])
        if self.neighbours is not None:
            out["nearest_neighbour"] = self.neighbours.to_dict()
        return out


def compare_parts(expected: np.ndarray, actual: np.ndarray, layout: "OutputLayout",
                  tolerance: ToleranceRule) -> list[tuple["Segment", "LogitsComparison"]]:
    """Each output element-wise, with ``tolerance`` of that output's torch values (in the output's own shape,
    so an index reads (sample, channel, row, column))."""
    from ..compare import compare_logits

    parts = []
    for seg in layout.segments:
        e, a = (seg.take(t).reshape(-1, *seg.shape) for t in (expected, actual))
        parts.append((seg, compare_logits(e, a, tolerance=tolerance(e))))
    return parts


def compare_outputs(expected: np.ndarray, actual: np.ndarray, layout: "OutputLayout", tolerance: ToleranceRule, *,
                    precision: str = "fp32", neighbours: bool = True) -> OutputsComparison:
    """Both sides' outputs by the rule of their kind (see the module docstring). A shape mismatch of the
    flat arrays is one failed part, as :func:`~..compare.compare_logits` words it."""
    from ..runtime.outputs import OutputLayout, Segment

    if expected.shape != actual.shape:
        from ..compare import compare_logits

        whole = Segment(0, tuple(expected.shape[1:]), 0, int(np.prod(expected.shape[1:])))
        return OutputsComparison(OutputLayout(layout.kind, (whole,)),
                                 [(whole, compare_logits(expected, actual, tolerance=tolerance(expected)))])
    result = OutputsComparison(layout, compare_parts(expected, actual, layout, tolerance))
    if layout.kind == "embedding":
        result.cosine, result.min_cosine = cosine_per_sample(expected, actual), min_cosine(precision)
        if neighbours:
            result.neighbours = nearest_neighbours(expected, actual, neighbour_tie(precision))
    return result


def constant_output(expected: np.ndarray, layout: "OutputLayout") -> str | None:
    """Why a comparison with torch's outputs cannot fail (an output constant across its elements), or None."""
    for seg, e in layout.parts(expected):
        finite = e[np.isfinite(e)]
        std = float(finite.std()) if finite.size else 0.0
        if std < 1e-6:
            what = "torch logits are" if layout.kind == "logits" else (
                "torch's embedding is" if layout.kind == "embedding" else f"torch's {seg.label} is")
            return (f"{what} constant (std {std:.2g}): this check cannot fail, so it does not pass. "
                    "Use =random weights (made non-degenerate) or real weights.")
    return None


def file_constant(expected: np.ndarray, actual: np.ndarray, layout: "OutputLayout",
                  runtime_info: dict[str, Any] | None = None) -> str | None:
    """Why the file's outputs are no answer at all: all zero or constant where torch's vary (a runtime that
    ran nothing, such as WebGPU on a float16 file without ``shader-f16``, returns zeros without an error);
    the runtime's own reason named when it gave one. None when the file's outputs vary."""
    info = runtime_info or {}
    for seg, e in layout.parts(expected):
        a = seg.take(actual)
        fe, fa = e[np.isfinite(e)], a[np.isfinite(a)]
        if not fe.size or float(fe.std()) < 1e-6 or (fa.size and float(fa.std()) > 1e-12 * max(1.0, float(np.abs(fa).max()))):
            continue
        what = "all zero" if fa.size and not np.any(fa) else f"constant ({float(fa.flat[0]) if fa.size else 'no finite value'})"
        where = info.get("runtime", "the runtime")
        backend = f" ({info['backend']})" if info.get("backend") else ""
        reason = f" {info['precision_reason']}" if info.get("precision_reason") else ""
        return (f"the file's {seg.label if len(layout.segments) > 1 else 'outputs'} on {where}{backend} are {what} "
                f"where torch's vary (std {float(fe.std()):.3g}): the runtime computed nothing and said nothing.{reason} "
                "This is never a pass, whatever the tolerance.")
    return None


def not_logits(layout: "OutputLayout", what: str) -> str:
    """The reason a class-based comparison (top-k, accuracy) does not apply to this layout."""
    return f"not run: the model returns {layout.describe()}, not class logits: {what} has no meaning here"


def judge_real_images(model: Any, e_list: list[np.ndarray], a_list: list[np.ndarray], first_x: np.ndarray | None,
                      layout: "OutputLayout", tolerance: ToleranceRule, options: Any, *, images: int, source: str,
                      max_pix: float | None, labelled: bool, head: str) -> "CheckResult":
    """The real_images verdict of an embedding or features: each output within its end-to-end tolerance, and
    an embedding's cosine similarity and nearest neighbours over the photos. ``e_list``/``a_list``: the
    flat outputs of both sides, batch by batch; ``head``: how the images went through (the message's start)."""
    from ..results import CheckResult

    e_all, a_all = np.concatenate(e_list), np.concatenate(a_list)
    cmp = compare_outputs(e_all, a_all, layout, tolerance, precision=options.precision)
    details: dict[str, Any] = {"images": images, "source": source, "output_kind": layout.kind,
                               "top1_agreement": None, **cmp.to_dict()}
    if max_pix is not None:
        details["max_input_diff"] = max_pix
    lines = [f"{head} ({layout.describe()}): max diff {cmp.max_abs_diff:.3g}"
             + (f", max input diff {max_pix:.2g}" if max_pix is not None else "")]
    if labelled:
        details["accuracy_judged"] = False
        lines.append(f"accuracy not judged: {not_logits(layout, 'class accuracy')[len('not run: '):]}; the outputs "
                     f"on the first {len(e_all)} images are compared instead")
    title = f"Outputs on {len(e_all)} real images differ end to end (torch: timm's transform; ONNX: the file's preprocessing)!"
    if cmp.expected_nonfinite:
        return CheckResult("real_images", "error", "inconclusive: torch's own outputs on the real images hold NaN or "
                           "Inf, so no comparison with them can pass or fail the export.\n" + cmp.message(title), details)
    lines.append(cmp.message(title))
    if not cmp.passed and first_x is not None and max_pix is not None and max_pix < 1e-3:
        from .arbitration import arbitrate  # same pixels on both sides, different outputs: is torch that unstable?

        seg, worst = cmp.worst()
        e0, a0 = seg.take(e_list[0]), seg.take(a_list[0])
        delta = float(np.abs(a0.astype(np.float64) - e0).max())
        verdict = arbitrate(model, first_x, delta, float(worst.atol), details, expected=e_list[0], seed=options.seed,
                            inputs_note=f"the inputs agree (max input diff {max_pix:.2g}) and ",
                            part=seg if len(layout.segments) > 1 else None)
        if verdict is not None:
            return CheckResult("real_images", "error", verdict + "\n" + "\n".join(lines), details)
    return CheckResult("real_images", "passed" if cmp.passed else "failed", "\n".join(lines), details)
