"""A deployment's preprocessed tensors against timm's eval transform of the same photos, and why they differ.

:func:`compare_preprocessing` measures the difference (input units, and 8-bit levels: ``diff * std * 255``
per channel, the model's std), per photo and overall. When the tensors differ it searches the candidate
pipelines of :mod:`.candidates` (normalisation, channel order, layout, scale; size, crop_pct, crop_mode;
interpolation and resize library; colour profile, EXIF orientation, grayscale), one step at a time and
then together, and reports the closest: which fields it changes (each a :class:`Finding`, with the share
of the difference that field alone explains), and how much of the difference is left unexplained.

No torch here: it runs where a deployment runs.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..tolerances import PREPROCESS_LEVEL_TOLERANCE, PREPROCESS_MAX_SHARE_OFF
from .candidates import CONFIG_FIELDS, NORMALISATIONS, Candidate, CandidateRunner
from .wording import closest_words, describe_field, fmt_pct

__all__ = ["MAX_DIAGNOSIS_PHOTOS", "Finding", "PreprocessingComparison", "compare_preprocessing"]

#: the diagnosis tries its candidates on at most this many photos (the first ones)
MAX_DIAGNOSIS_PHOTOS = 4
#: ... and searches them on this many of those
SEARCH_PHOTOS = 2
#: a candidate replaces the closest so far only when it lowers the mean residual by this share at least
MIN_GAIN = 0.01
#: where no candidate matches exactly, a field that explains less than this share is left out of the findings
MIN_FINDING_SHARE = 0.05


@dataclass(frozen=True)
class Finding:
    """One step the deployment does differently: ``field`` (a data-config field or a library step),
    what ``yours`` does, what the ``model`` was trained with, the share of the difference this field
    alone ``explains`` (0..1), and its ``kind``: ``"data_config"`` (a mismatch: fails) or ``"library"``
    (judged by its effect through the file)."""

    field: str
    yours: str
    model: str
    explains: float
    kind: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PreprocessingComparison:
    """What :func:`compare_preprocessing` found. ``passed`` is the verdict without the file: ``False`` for a
    data-config mismatch; a library difference passes here (the ``preprocessing`` check then judges it by
    its effect through the file)."""

    equal: bool
    max_abs_diff: float | None
    mean_abs_diff: float | None
    max_levels: float | None
    mean_levels: float | None
    share_off: float | None  # share of values off by more than the level tolerance
    per_photo: list[dict[str, Any]]
    diagnosis: list[Finding]
    closest: dict[str, Any] | None  # the closest candidate: its fields, residual and explained share
    message: str
    shape: tuple[int, ...]
    expected_shape: tuple[int, ...]
    level_tolerance: float = PREPROCESS_LEVEL_TOLERANCE
    max_share_off: float = PREPROCESS_MAX_SHARE_OFF
    yours: np.ndarray | None = field(default=None, repr=False)
    reference: np.ndarray | None = field(default=None, repr=False)
    level_scale: np.ndarray | None = field(default=None, repr=False)

    @property
    def mismatch(self) -> bool:
        """A data-config mismatch was found (mean/std, channel order, layout, scale, size, crop, grayscale)."""
        return any(f.kind == "data_config" for f in self.diagnosis)

    @property
    def passed(self) -> bool:
        return self.equal or not self.mismatch

    def level_map(self, index: int = 0) -> np.ndarray | None:
        """H,W: the largest difference over the channels, in 8-bit levels, of photo ``index``."""
        if self.yours is None or self.reference is None or self.yours.shape != self.reference.shape:
            return None
        d = np.abs(self.yours[index] - self.reference[index]) * self.level_scale[:, None, None]
        return d.max(axis=0)

    def to_dict(self) -> dict[str, Any]:
        keys = ("equal", "max_abs_diff", "mean_abs_diff", "max_levels", "mean_levels", "share_off", "per_photo",
                "closest", "message", "level_tolerance", "max_share_off")
        out = {k: getattr(self, k) for k in keys}
        out.update(passed=self.passed, shape=list(self.shape), expected_shape=list(self.expected_shape),
                   diagnosis=[f.to_dict() for f in self.diagnosis])
        return out


def compare_preprocessing(tensors: Any, images: Sequence[Any] | str | os.PathLike[str], config: Any, *,
                          reference: np.ndarray | None = None,
                          level_tolerance: float = PREPROCESS_LEVEL_TOLERANCE,
                          max_share_off: float = PREPROCESS_MAX_SHARE_OFF,
                          names: Sequence[str] | None = None) -> PreprocessingComparison:
    """Compare a deployment's ``tensors`` (float N,C,H,W or N,H,W,C) with timm's eval transform of ``images``
    (paths, a folder, PIL images) under ``config`` (the model's data-config dict, or an ONNX file carrying
    one), and diagnose the difference. ``reference``: timm's tensors when already made (else
    :func:`~.transform.preprocess`, pixel-exact to timm). Values within ``level_tolerance`` 8-bit levels
    count as equal; the tensors are equal when at most ``max_share_off`` of the values are off by more."""
    from .deploy import as_nchw
    from .transform import preprocess, resolve_config

    cfg = resolve_config(config)
    raw, labels = _decode_all(images)
    names = list(names) if names is not None else labels
    runner = CandidateRunner(raw, cfg)
    c = runner.base.channels
    yours, _layout = as_nchw(np.asarray(tensors), len(raw), c, cfg)
    ref = reference if reference is not None else preprocess([_rgb(im, runner.base.mode) for im in raw], cfg)
    ref = np.asarray(ref, dtype=np.float32)
    scale = np.asarray(runner.base.std, np.float64) * 255.0
    common: dict[str, Any] = {"shape": tuple(yours.shape), "expected_shape": tuple(ref.shape),
                              "level_tolerance": level_tolerance, "max_share_off": max_share_off, "yours": yours,
                              "reference": ref, "level_scale": scale}
    if yours.shape != ref.shape:
        return _size_mismatch(runner, yours, ref, names, common)
    stats = _stats(yours, ref, scale, level_tolerance, names)
    equal = stats["share_off"] <= max_share_off
    if equal:
        msg = (f"your tensors equal timm's eval transform of the model's data config within "
               f"{level_tolerance:g} 8-bit level ({fmt_pct(stats['share_off'])} of values off by more; max "
               f"{stats['max_levels']:.3g} levels, {stats['max_abs_diff']:.2g} in input units)")
        return PreprocessingComparison(equal=True, diagnosis=[], closest=None, message=msg, **stats, **common)
    findings, closest = _diagnose(runner, yours, scale, Candidate(), cfg, level_tolerance, max_share_off)
    msg = _difference_words(stats, level_tolerance) + " " + closest_words(findings, closest)
    return PreprocessingComparison(equal=False, diagnosis=findings, closest=closest, message=msg, **stats, **common)


def _decode_all(images: Any) -> tuple[list[Image.Image], list[str]]:
    from .decode import _as_items, _to_pil

    items = _as_items(images)
    raw, names = [], []
    for i, item in enumerate(items):
        if isinstance(item, Path):
            raw.append(_open_raw(item))
            names.append(item.name)
        else:
            raw.append(item if isinstance(item, Image.Image) else _to_pil(item))
            names.append(f"image {i}")
    return raw, names


def _open_raw(path: Path) -> Image.Image:
    """The image as stored (its EXIF and ICC profile kept); :func:`~.decode.open_image` words a bad file."""
    from .decode import open_image

    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return open_image(path)


def _rgb(image: Image.Image, mode: str) -> Image.Image:
    return image.convert(mode) if image.mode != mode else image


def _stats(yours: np.ndarray, ref: np.ndarray, scale: np.ndarray, tol: float, names: Sequence[str]) -> dict[str, Any]:
    diff = np.abs(yours.astype(np.float64) - ref)
    levels = diff * scale[None, :, None, None]
    per_photo = [{"photo": names[i] if i < len(names) else f"image {i}", "max_abs_diff": float(diff[i].max()),
                  "mean_abs_diff": float(diff[i].mean()), "max_levels": float(levels[i].max()),
                  "mean_levels": float(levels[i].mean()), "share_off": float((levels[i] > tol).mean())}
                 for i in range(len(yours))]
    return {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "max_levels": float(levels.max()), "mean_levels": float(levels.mean()),
            "share_off": float((levels > tol).mean()), "per_photo": per_photo}


def _difference_words(stats: Mapping[str, Any], tol: float) -> str:
    return (f"your tensors differ from timm's eval transform of the model's data config: max "
            f"{stats['max_levels']:.3g} 8-bit levels ({stats['max_abs_diff']:.3g} in input units), mean "
            f"{stats['mean_levels']:.3g} levels, {fmt_pct(stats['share_off'])} of values off by more than {tol:g} level.")


def _size_mismatch(runner: CandidateRunner, yours: np.ndarray, ref: np.ndarray, names: Sequence[str],
                   common: dict[str, Any]) -> PreprocessingComparison:
    size = (int(yours.shape[2]), int(yours.shape[3]))
    base = Candidate(input_size=size)
    findings, closest = _diagnose(runner, yours, common["level_scale"], base, runner.config,
                                  common["level_tolerance"], common["max_share_off"])
    c = runner.base.channels
    size_finding = Finding("input_size", f"input_size = ({c}, {size[0]}, {size[1]})",
                           f"input_size = ({c}, {ref.shape[2]}, {ref.shape[3]})", 1.0, "data_config")
    findings = [size_finding] + [f for f in findings if f.field != "input_size"]
    msg = (f"your tensors are {size[0]}x{size[1]}, the model's data config says {size_finding.model}: "
           "they cannot be compared value by value. " + closest_words(findings, closest))
    empty = {"max_abs_diff": None, "mean_abs_diff": None, "max_levels": None, "mean_levels": None,
             "share_off": None, "per_photo": [{"photo": n} for n in names]}
    return PreprocessingComparison(equal=False, diagnosis=findings, closest=closest, message=msg, **empty, **common)


# ---------------------------------------------------------------------------------------------- the search
class _Scorer:
    def __init__(self, runner: CandidateRunner, yours: np.ndarray, scale: np.ndarray, tol: float, share: float) -> None:
        self.runner, self.yours, self.scale = runner, yours.astype(np.float64), scale
        self.tol, self.share = tol, share
        self.cache: dict[Candidate, tuple[float, float, float, float] | None] = {}

    def __call__(self, cand: Candidate) -> tuple[float, float, float, float] | None:
        """(mean levels, max levels, max input units, share off) of the residual, ``None`` when unavailable."""
        if cand not in self.cache:
            t = self.runner.tensors(cand)
            if t is None or t.shape != self.yours.shape:
                self.cache[cand] = None
            else:
                d = np.abs(self.yours - t)
                lv = d * self.scale[None, :, None, None]
                self.cache[cand] = (float(lv.mean()), float(lv.max()), float(d.max()), float((lv > self.tol).mean()))
        return self.cache[cand]

    def best(self, cands: list[Candidate], current: Candidate) -> Candidate:
        best, best_score = current, self(current)
        for cand in cands:
            s = self(cand)
            if s is not None and (best_score is None or s[0] < best_score[0] * (1 - MIN_GAIN) - 1e-9):
                best, best_score = cand, s
                if self.exact(best):
                    break
        return best

    def exact(self, cand: Candidate) -> bool:
        s = self(cand)
        return s is not None and (s[1] < 1e-3 or s[3] <= self.share)


def _norm_variants(cur: Candidate, runner: CandidateRunner) -> list[Candidate]:
    model = (tuple(runner.base.mean), tuple(runner.base.std))
    c = runner.base.channels
    names = [None] + [k for k, v in NORMALISATIONS.items()
                      if not np.allclose(np.r_[v[0][:c], v[1][:c]], np.r_[model[0], model[1]], atol=1e-4)]
    orders = [None, "BGR"] if c == 3 else [None]
    return [replace(cur, mean_std=m, scale=s, channel_order=o, layout=lay)
            for m in names for s in (None, "0-255") for o in orders for lay in (None, "NHWC read as NCHW")]


def _geometry_variants(cur: Candidate, runner: CandidateRunner) -> list[Candidate]:
    tf = runner.base
    crops: list[tuple[float | None, str | None]] = [(None, None)]
    crops += [(p, "center" if tf.crop_mode != "center" else None) for p in (0.875, 0.9, 0.95, 1.0)
              if abs(p - tf.crop_pct) > 1e-6]
    if tf.crop_mode != "center":
        crops.append((None, "center"))
    for mode in ("squash", "border", "letterbox"):
        if mode != tf.crop_mode:
            crops.append((None, mode))
        if abs(tf.crop_pct - 1.0) > 1e-6:
            crops.append((1.0, mode))
    interps = ("nearest", "bilinear", "bicubic", "box")
    resizers: list[tuple[str | None, str | None]] = [(None, None)]
    resizers += [(i, None) for i in interps if i != tf.interpolation]
    resizers += [(i, "cv2") for i in interps] + [("bilinear", "noaa")]
    # the crops with the current resize, then the resizes with the current crop, then every pair: the search
    # stops at the first exact match, so a single difference is found after a few resizes of large photos
    pairs = [(c, resizers[0]) for c in crops] + [(crops[0], r) for r in resizers[1:]]
    pairs += [(c, r) for c in crops[1:] for r in resizers[1:]]
    return [replace(cur, crop_pct=p, crop_mode=m, interpolation=i, library=lib) for (p, m), (i, lib) in pairs]


def _decode_variants(cur: Candidate, runner: CandidateRunner) -> list[Candidate]:
    out = []
    for exif in ([False, True] if runner.has_exif_rotation() else [False]):
        for icc in ([False, True] if runner.has_icc() else [False]):
            for gray in ([False, True] if runner.base.channels == 3 else [False]):
                out.append(replace(cur, exif=exif, colour_profile=icc, grayscale=gray))
    return out


def _search(runner: CandidateRunner, yours: np.ndarray, scale: np.ndarray, base: Candidate, tol: float,
            max_share: float) -> Candidate:
    """The closest candidate, searched on :data:`SEARCH_PHOTOS` photos (those whose shape differs most from the
    input's first: they tell the crops apart) and one with an ICC colour profile when any has one, one group of
    fields at a time, twice."""
    target = runner.base.input_size[1] / runner.base.input_size[0]
    ratios = [abs(np.log(im.size[0] / im.size[1] / target)) for im in runner.raw]
    pick = sorted(range(len(ratios)), key=lambda i: -ratios[i])[:SEARCH_PHOTOS]
    icc = [i for i, im in enumerate(runner.raw) if im.info.get("icc_profile")]
    if icc and not set(icc) & set(pick):  # a photo with a colour profile: only it can tell a profile conversion apart
        pick.append(icc[0])
    pick = sorted(pick)
    sub = CandidateRunner([runner.raw[i] for i in pick], runner.config)
    score = _Scorer(sub, yours[pick], scale, tol, max_share)
    best = base
    for _ in range(2):
        for variants in (_norm_variants, _geometry_variants, _decode_variants):
            if not score.exact(best):
                best = score.best(variants(best, sub), best)
    fitted = None if score.exact(best) else sub.fit_mean_std(best, yours[pick])
    return score.best([fitted], best) if fitted is not None else best


def _diagnose(runner: CandidateRunner, yours: np.ndarray, scale: np.ndarray, base: Candidate, cfg: Mapping[str, Any],
              tol: float = PREPROCESS_LEVEL_TOLERANCE,
              max_share: float = PREPROCESS_MAX_SHARE_OFF) -> tuple[list[Finding], dict[str, Any]]:
    """Coordinate search over the candidates, then each changed field alone; the findings and the closest."""
    n = min(len(yours), MAX_DIAGNOSIS_PHOTOS)
    if n < len(yours):
        runner = CandidateRunner(runner.raw[:n], runner.config)
        yours = yours[:n]
    best = _search(runner, yours, scale, base, tol, max_share)
    score = _Scorer(runner, yours, scale, tol, max_share)
    s0, sb = score(base), score(best)
    if s0 is None or sb is None:
        return [], {"fields": {}, "explains": 0.0, "residual_mean_levels": None, "residual_max_levels": None,
                    "residual_max_abs": None}
    explains = _share(s0[0], sb[0])
    findings = []
    for name in best.changed():
        if name == "input_size" or (name == "interpolation" and best.library):
            continue
        share = _attribution(score, best, name, base, s0[0], sb[0], explains)
        yours_w, model_w = describe_field(name, best, runner, cfg)
        kind = "data_config" if name in CONFIG_FIELDS else "library"
        findings.append(Finding(name, yours_w, model_w, round(share, 4), kind))
    if not score.exact(best):  # an approximate fit: a field that barely helps is noise, not a finding
        findings = [f for f in findings if f.explains >= MIN_FINDING_SHARE]
    findings.sort(key=lambda f: -f.explains)
    closest = {"fields": {k: (list(v) if isinstance(v, tuple) else v) for k, v in best.changed().items()},
               "explains": round(explains, 4), "residual_mean_levels": sb[0], "residual_max_levels": sb[1],
               "residual_max_abs": sb[2], "residual_share_off": sb[3], "baseline_mean_levels": s0[0]}
    return findings, closest


def _attribution(score: _Scorer, best: Candidate, name: str, base: Candidate, r0: float, rb: float,
                 explains: float) -> float:
    """The share of the difference field ``name`` explains: the mean of what it removes alone (from timm's
    pipeline) and what comes back without it (from the closest): Shapley's value for two fields."""
    alone = score(replace(best.only(name), input_size=base.input_size))
    without = score(best.without(name))
    if alone is None or without is None or r0 <= 0:
        return explains
    return float(min(1.0, max(0.0, (_share(r0, alone[0]) + (without[0] - rb) / r0) / 2)))


def _share(before: float, after: float) -> float:
    if before <= 0:
        return 1.0
    return float(min(1.0, max(0.0, 1.0 - after / before)))
