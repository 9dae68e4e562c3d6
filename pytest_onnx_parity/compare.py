"""Numeric comparisons of logits, free of pytest and torch.

An element passes when ``|actual - expected| <= atol + rtol * |expected|``; the
tolerances, their defaults and the rule that ``atol`` and ``rtol`` come together
live in :mod:`pytest_onnx_parity.tolerances`. This module decides the ``logits``
and ``topk`` verdicts and formats their messages.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .errors import ParityFailure, SpecError
from .tolerances import DEFAULT_TOLERANCES, TOLERANCE_HINT, Tolerance, logits_tolerance

__all__ = [
    "DEFAULT_TOLERANCES", "TOLERANCE_HINT", "LogitsComparison", "TopkComparison", "assert_logits_close",
    "assert_topk_agreement", "compare_logits", "compare_topk", "format_table", "to_numpy",
]


def to_numpy(x: Any) -> np.ndarray:
    """numpy view of a numpy array, torch tensor or nested sequence."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        return x.numpy()
    return np.asarray(x)


@dataclass
class LogitsComparison:
    passed: bool
    shape: tuple[int, ...]
    max_abs_diff: float
    max_rel_diff: float
    mismatched: int
    total: int
    atol: float
    rtol: float
    tolerance_source: str
    worst: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None  # shape / non-finite problems, said before values
    expected_nonfinite: int = 0  # NaN or Inf values on the torch side

    def message(self, title: str = "Logits are not close!") -> str:
        if self.problem and (self.passed or not self.worst):
            return f"{title}\n\n{self.problem}" if not self.passed else f"logits close; note: {self.problem}"
        if self.passed:
            return (f"logits close: max abs diff {self.max_abs_diff:.3g} "
                    f"(atol {self.atol:.3g}, rtol {self.rtol:.3g})")
        pct = 100.0 * self.mismatched / max(self.total, 1)
        lines = [title, ""] + ([self.problem, ""] if self.problem else [])
        lines.append(f"Mismatched elements: {self.mismatched} / {self.total} ({pct:.1f}%)")
        if self.worst:
            w = self.worst[0]
            lines.append(
                f"Greatest absolute difference: {self.max_abs_diff:.3g} at index {w['index']} "
                f"(up to {w['allowed']:.3g} allowed)"
            )
            lines.append(f"Greatest relative difference: {self.max_rel_diff:.3g} (up to {self.rtol:.3g} allowed)")
            lines.append("Worst entries:")
            lines.append(f"  {'index':<14}{'torch':>13}{'onnx':>13}{'abs diff':>12}{'allowed':>12}")
            for w in self.worst:
                lines.append(
                    f"  {str(w['index']):<14}{w['expected']:>13.6g}{w['actual']:>13.6g}{w['diff']:>12.3g}{w['allowed']:>12.3g}"
                )
        lines.append(f"Tolerance: atol={self.atol:.3g} ({self.tolerance_source}), rtol={self.rtol:.3g}. "
                     f"Change it with {TOLERANCE_HINT}.")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed, "max_abs_diff": self.max_abs_diff, "max_rel_diff": self.max_rel_diff,
            "mismatched": self.mismatched, "total": self.total, "atol": self.atol, "rtol": self.rtol,
            "problem": self.problem, "expected_nonfinite": self.expected_nonfinite,
        }


def _nonfinite_counts(x: np.ndarray) -> tuple[int, int]:
    return int(np.isnan(x).sum()), int(np.isinf(x).sum())


def _first_index(mask: np.ndarray) -> tuple[int, ...] | None:
    hits = np.argwhere(mask)
    return tuple(int(i) for i in hits[0]) if len(hits) else None


def compare_logits(expected: Any, actual: Any, *, atol: float | None = None, rtol: float | None = None,
                   n_worst: int = 5, equal_nan: bool = False, tolerance: Tolerance | None = None) -> LogitsComparison:
    """Compare two logit arrays; shapes and non-finite values are checked before values.

    Non-finite values follow ``torch.testing.assert_close``: an Inf matches only the
    same Inf in the same place; NaN matches NaN in the same place only with
    ``equal_nan=True``, and never a number. NaN or Inf in ``expected`` (the torch
    side) is named in :attr:`LogitsComparison.problem` and counted in
    :attr:`LogitsComparison.expected_nonfinite`. ``tolerance`` (instead of ``atol``/``rtol``): one a run
    resolved already (:func:`~.tolerances.logits_tolerance`), with its source.
    """
    e, a = to_numpy(expected), to_numpy(actual)
    tol = tolerance or logits_tolerance(e, atol, rtol)
    atol_v, rtol_v = tol.atol, tol.rtol
    base = dict(atol=atol_v, rtol=rtol_v, tolerance_source=tol.source)
    if e.shape != a.shape:
        return LogitsComparison(False, tuple(e.shape), math.inf, math.inf, e.size, e.size, **base,
                                problem=f"Shapes differ: torch gives {tuple(e.shape)}, ONNX Runtime gives {tuple(a.shape)}.")
    e64, a64 = e.astype(np.float64), a.astype(np.float64)
    fin_e, fin_a = np.isfinite(e64), np.isfinite(a64)
    same_nonfinite = (np.isinf(e64) & (e64 == a64)) | (equal_nan & np.isnan(e64) & np.isnan(a64))
    with np.errstate(invalid="ignore"):
        diff = np.abs(a64 - e64)
    diff[~(fin_e & fin_a)] = np.inf
    diff[same_nonfinite] = 0.0
    allowed = atol_v + rtol_v * np.abs(np.where(fin_e, e64, 0.0))
    over = diff > allowed
    problems = []
    e_nan, e_inf = _nonfinite_counts(e64)
    if e_nan or e_inf:
        problems.append(f"torch's own logits hold {e_nan} NaN and {e_inf} Inf values (first at index "
                        f"{_first_index(~fin_e)}): the torch model itself does not give numbers here.")
    stray = ~fin_a & ~same_nonfinite & fin_e
    if stray.any():
        a_nan, a_inf = _nonfinite_counts(np.where(stray, a64, 0.0))
        problems.append(f"ONNX Runtime gives {int(stray.sum())} non-finite values ({a_nan} NaN, {a_inf} Inf; first at "
                        f"index {_first_index(stray)}) where torch gives numbers.")
    if (np.isnan(e64) & np.isnan(a64)).any() and not equal_nan:
        problems.append("NaN never equals NaN unless equal_nan=True.")
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(np.abs(e64) > 0, diff / np.abs(e64), np.where(diff > 0, np.inf, 0.0))
    rel[~fin_e] = np.where(diff[~fin_e] > 0, np.inf, 0.0)
    worst_idx = np.argsort(-(np.where(over, diff - np.where(np.isfinite(allowed), allowed, 0.0), -np.inf)), axis=None,
                           kind="stable")[:n_worst] if e.size else []
    worst = []
    for flat in worst_idx:
        idx = np.unravel_index(int(flat), e.shape)
        if not over[idx]:
            break
        worst.append({"index": tuple(int(i) for i in idx), "expected": float(e64[idx]), "actual": float(a64[idx]),
                      "diff": float(diff[idx]), "allowed": float(allowed[idx])})
    if worst and diff.size:
        top = np.unravel_index(int(np.argmax(diff)), e.shape)
        worst_by_abs = {"index": tuple(int(i) for i in top), "expected": float(e64[top]), "actual": float(a64[top]),
                        "diff": float(diff[top]), "allowed": float(allowed[top])}
        worst = [worst_by_abs] + [w for w in worst if w["index"] != worst_by_abs["index"]][: n_worst - 1]
    return LogitsComparison(
        passed=not bool(over.any()), shape=tuple(e.shape),
        max_abs_diff=float(diff.max()) if diff.size else 0.0,
        max_rel_diff=float(rel.max()) if rel.size else 0.0,
        mismatched=int(over.sum()), total=int(e.size), worst=worst if over.any() else [], **base,
        problem="\n".join(problems) or None, expected_nonfinite=e_nan + e_inf,
    )


def assert_logits_close(expected: Any, actual: Any, *, atol: float | None = None, rtol: float | None = None,
                        equal_nan: bool = False) -> LogitsComparison:
    """Raise :class:`ParityFailure` (an ``AssertionError``) unless the logits are close.

    NaN and Inf compare as in ``torch.testing.assert_close`` (see :func:`compare_logits`).
    """
    __tracebackhide__ = True
    result = compare_logits(expected, actual, atol=atol, rtol=rtol, equal_nan=equal_nan)
    if not result.passed:
        raise ParityFailure(result.message())
    return result


@dataclass
class TopkComparison:
    passed: bool
    k: int
    samples: int
    top1_agreement: float
    topk_agreement: float
    min_agreement: float
    disagreements: list[dict[str, Any]] = field(default_factory=list)  # real ones
    near_ties: list[dict[str, Any]] = field(default_factory=list)  # reported, not failed
    labels: list[str] | None = field(default=None, repr=False)  # class names, when known (messages name them)
    top1: list[int] = field(default_factory=list)  # torch's top-1 class of the first samples
    requested_k: int | None = None  # the k asked for, when the head's class count cut it down
    agreement: float | None = None  # the share of samples whose top-k set and top-1 both agree (the pass rule)

    def _named(self, classes: Sequence[int]) -> str:
        from .runtime.outputs import class_name

        return "[" + ", ".join(class_name(int(c), self.labels) for c in classes) + "]"

    def _failed_k(self) -> int:
        """1 when every real disagreement keeps the top-k set and only swaps top-1, else k."""
        if self.disagreements and all(set(d["torch"]) == set(d["onnx"]) for d in self.disagreements):
            return 1
        return self.k

    def message(self) -> str:
        k = self.k
        named = ""
        if self.labels is not None and self.top1:
            named = "; torch top-1: " + ", ".join(f"sample {i} {self._named([c])[1:-1]}" for i, c in enumerate(self.top1[:4]))
        if self.passed:
            return (f"top-{k} agreement {self.topk_agreement:.1%} (top-1 {self.top1_agreement:.1%}) over "
                    f"{self.samples} samples, {len(self.near_ties)} near-tie swap(s) not counted{named}")
        failed = self._failed_k()
        agree = self.agreement if self.agreement is not None else self.topk_agreement
        title = f"Top-{failed} classes disagree!"
        if failed != k:
            title += f" (the top-{k} sets agree on every sample)"
        lines = [title, "",
                 f"{round(agree * self.samples)} of {self.samples} samples ({agree:.1%}) agree on top-1 and on the "
                 f"top-{k} set; at least {self.min_agreement:.1%} required: top-1 agreement {self.top1_agreement:.1%}, "
                 f"top-{k} set agreement {self.topk_agreement:.1%} ({len(self.near_ties)} near-tie swap(s) not counted){named}."]
        if self.requested_k is not None and self.requested_k != k:
            lines.append(f"(the head has {k} classes, so top-{self.requested_k} is top-{k})")
        lines.append("Disagreeing samples (torch logits of the swapped classes differ by more than the tolerance):")
        for d in self.disagreements[:5]:
            te, ta = (d["torch"][:1], d["onnx"][:1]) if failed == 1 else (d["torch"], d["onnx"])
            lines.append(f"  sample {d['sample']}: torch top-{failed} {self._named(te)} vs ONNX {self._named(ta)} "
                         f"(torch logit gap {d['gap']:.3g}, tolerance {d['tolerance']:.3g})")
        lines.append("Change it with min_agreement= (or loosen the logits tolerance with " + TOLERANCE_HINT + ").")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "k": self.k, "samples": self.samples, "top1_agreement": self.top1_agreement,
                "topk_agreement": self.topk_agreement, "near_ties": self.near_ties[:10],
                "disagreements": self.disagreements[:10]}


def _topk(x: np.ndarray, k: int) -> np.ndarray:
    idx = np.argpartition(-x, k - 1, axis=-1)[..., :k]
    order = np.take_along_axis(-x, idx, axis=-1).argsort(axis=-1, kind="stable")
    return np.take_along_axis(idx, order, axis=-1)


def compare_topk(expected: Any, actual: Any, *, k: int = 5, min_agreement: float = 1.0,
                 atol: float | None = None, rtol: float | None = None,
                 labels: Sequence[str] | None = None, tolerance: Tolerance | None = None) -> TopkComparison:
    """Top-k agreement per sample; a swap between classes whose torch logits differ by
    less than the logits tolerance is a near tie: reported, not failed. ``labels``: the class
    names (one per logit), named in the message (:func:`~.runtime.outputs.label_names`)."""
    e, a = to_numpy(expected).astype(np.float64), to_numpy(actual).astype(np.float64)
    if e.ndim == 1:
        e, a = e[None], a[None]
    if e.shape != a.shape:
        raise SpecError(f"top-k needs logits of the same shape, got {e.shape} and {a.shape}")
    if not 0.0 <= min_agreement <= 1.0:
        raise SpecError(f"min_agreement must lie in [0, 1], got {min_agreement}")
    e2 = e.reshape(-1, e.shape[-1])
    a2 = a.reshape(-1, a.shape[-1])
    requested_k = int(k)
    k = max(1, min(requested_k, e2.shape[-1]))
    tol = tolerance or logits_tolerance(e2.astype(np.float32), atol, rtol)
    atol_v, rtol_v = tol.atol, tol.rtol
    te, ta = _topk(e2, k), _topk(a2, k)
    top1_ok = te[:, 0] == ta[:, 0]
    disagreements, ties = [], []
    ok_count = 0
    for i in range(e2.shape[0]):
        se, sa = set(te[i].tolist()), set(ta[i].tolist())
        if se == sa and top1_ok[i]:
            ok_count += 1
            continue
        swapped = sorted((se ^ sa) | ({int(te[i, 0]), int(ta[i, 0])} if not top1_ok[i] else set()))
        vals = e2[i, swapped]
        gap = float(vals.max() - vals.min()) if len(swapped) > 1 else 0.0
        ref = float(np.abs(vals).max()) if len(swapped) else 0.0
        tol = 2 * (atol_v + rtol_v * ref)  # each side may move by one tolerance
        entry = {"sample": i, "torch": te[i].tolist(), "onnx": ta[i].tolist(), "classes": swapped, "gap": gap, "tolerance": tol}
        if gap <= tol:
            ties.append(entry)
            ok_count += 1
        else:
            disagreements.append(entry)
    n = e2.shape[0]
    agreement = ok_count / n if n else 1.0
    topk_exact = float(np.mean([set(te[i].tolist()) == set(ta[i].tolist()) for i in range(n)])) if n else 1.0
    return TopkComparison(
        passed=agreement >= min_agreement - 1e-12, k=k, samples=n, top1_agreement=float(top1_ok.mean()) if n else 1.0,
        topk_agreement=topk_exact, min_agreement=min_agreement, disagreements=disagreements, near_ties=ties,
        labels=list(labels) if labels is not None and len(labels) == e2.shape[-1] else None,
        top1=[int(c) for c in te[:8, 0]], requested_k=requested_k if requested_k != k else None, agreement=agreement,
    )


def assert_topk_agreement(expected: Any, actual: Any, *, k: int = 5, min_agreement: float = 1.0,
                          atol: float | None = None, rtol: float | None = None) -> TopkComparison:
    """Raise :class:`ParityFailure` unless top-k classes agree on at least ``min_agreement`` of samples."""
    __tracebackhide__ = True
    result = compare_topk(expected, actual, k=k, min_agreement=min_agreement, atol=atol, rtol=rtol)
    if not result.passed:
        raise ParityFailure(result.message())
    return result


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for j, r in enumerate(cells):
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
