"""The int8 check: an int8 file judged by classification on real images (top-1 agreement with
torch, accuracy drop on labelled images), not by its logits.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..onnxfile.file_precision import PrecisionError
from ..results import CheckResult
from ..tolerances import PRECISION_PROFILES, logit_rms

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from ..runtime.outputs import OutputLayout
    from .context import CheckContext


def check(ctx: "CheckContext", pre: Any = None) -> CheckResult:
    """The int8 verdict (precision profile, :func:`int8_verdict`) of a run's int8 file on real images, as its
    real_images check, through the one photo pipeline (:func:`.real_images.stream`).

    At a variant's optimisation level other than ``disabled`` the file also runs with ONNX Runtime's
    optimisations disabled on the same inputs: int8 kernels (fused or not, and by the CPU's instruction
    set) round differently, so the details and the message say whether the classes depend on the level
    (:func:`compare_opt_levels`); the verdict itself is the variant's level's."""
    import numpy as np

    from ..preprocessing.labels import Labels
    from ..runtime.forward import chosen_outputs
    from ..runtime.runner import RunSettings, open_runner
    from .photos import photo_set, preprocessor_for, stream

    o = ctx.options
    pre = pre if pre is not None else preprocessor_for(ctx)
    found = photo_set(ctx)
    extra: dict[str, Any] = {}
    settings = RunSettings.of(o)
    if o.ort_opt != "disabled":
        plain = open_runner(ctx.path, settings.at(ort_opt="disabled"))
        _choose_like(plain, chosen_outputs(ctx.session))
        extra["disabled"] = plain
    tally, layout, extras = stream(ctx, pre, found, extra_runners=extra, keep=None)
    if layout is None or tally.images == 0:
        return CheckResult("real_images", "skipped", "int8 verdict skipped: no images were compared")
    e, a = tally.expected, tally.actual
    if layout.kind != "logits":  # an embedding or features: no classes to agree on
        v = int8_cosine_verdict(e, a, layout)
        return CheckResult("real_images", v.status, v.message, {**v.figures, "opt_level": o.ort_opt})
    labels = np.asarray(found.targets) if isinstance(found, Labels) else None
    given = {"min_top1_agreement": o.int8_min_agreement, "max_accuracy_drop": o.int8_max_accuracy_drop}
    kw = {k: x for k, x in given.items() if x is not None}
    v = int8_verdict(e, a, labels, random_weights=ctx.random_weights, **kw)
    details, message = dict(v.figures), v.message
    details["opt_level"] = o.ort_opt
    if v.status != "skipped" and "disabled" in extras:
        a0 = extras["disabled"].actual
        v0 = int8_verdict(e, a0, labels, **kw)
        figures, sentence = compare_opt_levels(e, a, a0, opt_level=o.ort_opt, names=[Path(p).name for p in found.paths])
        details.update(figures, verdict_disabled=v0.status)
        message = message.rstrip(".") + ". " + sentence + "."
        if v0.status != v.status:
            message += f" With optimisations disabled the verdict would be {v0.status}."
    return CheckResult("real_images", v.status, message, details)


def _choose_like(runner: Any, names: list[str]) -> None:
    """The same outputs chosen on another runner of the same file."""
    from ..runtime import forward

    forward.remember_outputs(runner, names)


_INT8 = PRECISION_PROFILES["int8"]


DEFAULT_MIN_TOP1_AGREEMENT: float = _INT8.min_top1_agreement  # type: ignore[assignment]


DEFAULT_MAX_ACCURACY_DROP: float = _INT8.max_accuracy_drop  # type: ignore[assignment]


def compare_opt_levels(torch_logits: Any, logits: Any, logits_disabled: Any, *, opt_level: str,
                       names: Sequence[str] | None = None) -> tuple[dict[str, Any], str]:
    """Whether an int8 file's top-1 classes depend on ONNX Runtime's optimisation level.

    ``logits``: the file at ``opt_level``; ``logits_disabled``: the same file and images with
    optimisations disabled; ``torch_logits``: the torch model. Returns ``(figures, sentence)``:
    ``opt_level``, ``top1_agreement_disabled`` (with torch, at ``disabled``),
    ``top1_same_across_opt_levels`` (share of images whose class is the same at both levels),
    ``opt_level_dependent`` and ``opt_level_changes`` (each image that changes class: index,
    name, class at both levels and torch's), and a sentence for the check's message.
    """
    import numpy as np

    from ..compare import to_numpy

    e, a, a0 = (to_numpy(v).astype(np.float64) for v in (torch_logits, logits, logits_disabled))
    if not e.shape == a.shape == a0.shape or e.ndim != 2:
        raise PrecisionError(f"logits must be (images, classes) of one shape, got {e.shape}, {a.shape} and {a0.shape}")
    pt, p, p0 = e.argmax(1), a.argmax(1), a0.argmax(1)
    n = e.shape[0]
    changed = [int(i) for i in np.flatnonzero(p != p0)]
    changes = [{"image": i, **({"name": str(names[i])} if names is not None and i < len(names) else {}),
                opt_level: int(p[i]), "disabled": int(p0[i]), "torch": int(pt[i])} for i in changed[:20]]
    figures: dict[str, Any] = {
        "opt_level": opt_level, "top1_agreement_disabled": float((p0 == pt).mean()) if n else None,
        "top1_same_across_opt_levels": float((p == p0).mean()) if n else None,
        "opt_level_dependent": bool(changed), "opt_level_changes": changes}
    agree, agree0 = float((p == pt).mean()) if n else 0.0, figures["top1_agreement_disabled"] or 0.0
    if not changed:
        return figures, (f"ONNX Runtime optimisation level {opt_level} and disabled give the same top-1 class on all "
                         f"{n} images")
    shown = "; ".join(f"image {c['image']}{' ' + c['name'] if 'name' in c else ''}: class {c[opt_level]} at {opt_level}, "
                      f"{c['disabled']} at disabled, torch {c['torch']}" for c in changes[:3])
    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
    return figures, (f"This result depends on ONNX Runtime's optimisation level: {len(changed)} of {n} images change "
                     f"class between {opt_level} and disabled ({shown}{more}); top-1 agreement with torch {agree:.1%} at "
                     f"{opt_level}, {agree0:.1%} at disabled. int8 kernels differ by optimisation level and by the CPU's "
                     "instruction set (the report's environment records it); judge int8 files on a labelled folder of a "
                     "few hundred images, where one image moves the figure by well under a percent")


@dataclass
class Int8Verdict:
    """The int8 verdict: ``status`` is passed, failed or skipped; figures carry what was measured."""

    status: str
    message: str
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "message": self.message, **self.figures}


def int8_cosine_verdict(torch_out: Any, int8_out: Any, layout: "OutputLayout") -> Int8Verdict:
    """Judge an int8 file of an embedding or features (flat outputs on the same real images, as
    :func:`~..runtime.forward.torch_forward` gives them) by cosine: each output's mean over the images of
    the per-image cosine similarity to torch's must reach :data:`~..tolerances.INT8_MIN_COSINE`."""
    import numpy as np

    from ..tolerances import INT8_MIN_COSINE
    from .output_kinds import cosine_per_sample

    e, a = np.asarray(torch_out, dtype=np.float64), np.asarray(int8_out, dtype=np.float64)
    if e.shape != a.shape or e.ndim != 2:
        raise PrecisionError(f"torch and int8 outputs must be (images, D) of one shape, got {e.shape} and {a.shape}")
    if e.shape[0] == 0:
        return Int8Verdict("skipped", "int8 verdict skipped: no images were compared", {"min_cosine": INT8_MIN_COSINE})
    rows = []
    for seg in layout.segments:
        cos = cosine_per_sample(seg.take(e), seg.take(a))
        rows.append({"output": seg.label, "mean_cosine": float(cos.mean()), "min_cosine_image": float(cos.min()),
                     "worst_image": int(np.argmin(cos))})
    figures: dict[str, Any] = {"output_kind": layout.kind, "images": int(e.shape[0]), "min_cosine": INT8_MIN_COSINE,
                               "top1_agreement": None, "outputs": rows}
    where = (lambda r: "" if len(rows) == 1 else f"{r['output']}: ")
    text = "; ".join(f"{where(r)}mean cosine similarity {r['mean_cosine']:.4f} (least {r['min_cosine_image']:.4f}, "
                     f"image {r['worst_image']})" for r in rows)
    head = f"int8 {layout.describe()} on {e.shape[0]} real images: {text}"
    low = [r for r in rows if not r["mean_cosine"] >= INT8_MIN_COSINE]
    if not np.isfinite(a).all():
        return Int8Verdict("failed", f"{head}. The int8 file gives {int((~np.isfinite(a)).sum())} non-finite values.",
                           figures)
    if low:
        return Int8Verdict("failed", f"int8 file's outputs depart from the torch model: {head}. "
                           f"{', '.join(r['output'] for r in low)} below the mean cosine {INT8_MIN_COSINE:g} required "
                           "(tolerances.INT8_MIN_COSINE).", figures)
    return Int8Verdict("passed", f"{head}; at least {INT8_MIN_COSINE:g} required (a floor against broken int8 files, "
                       "not a quality bar: see tolerances.INT8_MIN_COSINE)", figures)


def int8_verdict(
    torch_logits: Any,
    int8_logits: Any,
    labels: "Sequence[int] | np.ndarray | None" = None,
    *,
    min_top1_agreement: float = DEFAULT_MIN_TOP1_AGREEMENT,
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
    random_weights: bool = False,
) -> Int8Verdict:
    """Judge an int8 file by classification on real images.

    ``torch_logits`` (torch float32 model) and ``int8_logits`` (the int8 file) on the
    same preprocessed real images; ``labels`` their ImageNet class indices, when known.
    Fails when the top-1 agreement is below ``min_top1_agreement`` (a fraction) or,
    with labels, when int8 top-1 accuracy is lower than torch's by more than
    ``max_accuracy_drop`` percentage points. ``random_weights=True`` (a model with
    random weights) gives ``"skipped"``: neither figure means anything then.
    """
    import numpy as np

    from ..compare import to_numpy
    from .accuracy import accuracy_problem

    if not 0.0 <= min_top1_agreement <= 1.0:
        raise PrecisionError(f"min_top1_agreement is a fraction in [0, 1], got {min_top1_agreement!r}")
    if not max_accuracy_drop >= 0.0:
        raise PrecisionError(f"max_accuracy_drop is in percentage points (>= 0), got {max_accuracy_drop!r}")
    e, a = to_numpy(torch_logits).astype(np.float64), to_numpy(int8_logits).astype(np.float64)
    if e.shape != a.shape or e.ndim != 2:
        raise PrecisionError(f"torch and int8 logits must be (images, classes) of one shape, got {e.shape} and {a.shape}")
    thresholds = {"min_top1_agreement": min_top1_agreement, "max_accuracy_drop_pp": max_accuracy_drop}
    if random_weights:
        return Int8Verdict("skipped", "int8 verdict skipped: the model has random weights, so accuracy is ~0% on both "
                           "sides and top-1 agreement reflects noise, not quantisation quality. Check int8 files with "
                           "pretrained or checkpoint weights (NAME=pretrained or NAME=/path/to/weights).", thresholds)
    if e.shape[0] == 0:
        return Int8Verdict("skipped", "int8 verdict skipped: no images were compared", thresholds)
    n = e.shape[0]
    pe, pa = e.argmax(1), a.argmax(1)
    agree = float((pe == pa).mean())
    rms = logit_rms(e)
    figures: dict[str, Any] = {**thresholds, "images": n, "top1_agreement": agree,
                               "max_abs_diff_rel": float(np.abs(a - e).max()) / rms if rms > 0 else float("inf"),
                               "disagreements": [int(i) for i in np.flatnonzero(pe != pa)][:20]}
    problems = []
    if not np.isfinite(a).all():
        problems.append(f"the int8 file gives {int((~np.isfinite(a)).sum())} non-finite logits")
    if agree < min_top1_agreement:
        problems.append(f"top-1 agreement {agree:.1%} ({int((pe == pa).sum())}/{n} images) is below {min_top1_agreement:.1%}")
    text = f"top-1 agreement {agree:.1%} on {n} real images"
    if labels is not None:
        y = np.asarray(labels).reshape(-1)
        if y.shape[0] != n:
            raise PrecisionError(f"{y.shape[0]} labels for {n} images")
        acc_t, acc_q = 100.0 * float((pe == y).mean()), 100.0 * float((pa == y).mean())
        drop = acc_t - acc_q
        figures.update({"torch_top1": acc_t, "int8_top1": acc_q, "accuracy_drop_pp": drop})
        text += f"; top-1 accuracy torch {acc_t:.1f}%, int8 {acc_q:.1f}% (drop {drop:.1f} pp)"
        problem = accuracy_problem(acc_t, acc_q, max_accuracy_drop, what="int8")  # the package's one accuracy rule
        if problem:
            problems.append(problem)
    else:
        figures["accuracy_drop_pp"] = None
        text += "; accuracy not measured (no labels: pass a labelled folder, class sub-folders named by synset)"
    if problems:
        return Int8Verdict("failed", "int8 file classifies differently from the torch model: " + "; ".join(problems) +
                           f". ({text}.) Thresholds: min_top1_agreement, max_accuracy_drop.", figures)
    return Int8Verdict("passed", text, figures)
