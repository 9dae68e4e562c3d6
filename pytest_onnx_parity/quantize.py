"""int8 variants of a float32 export, and the verdict on them.

:func:`to_int8` quantizes a float32 file made by :func:`pytest_onnx_parity.export_onnx`
with ``onnxruntime.quantization``:

* ``mode="static"`` (CNNs): QDQ format, uint8 activations, int8 weights (per output
  channel by default), MinMax calibration on real images (:func:`calibration_images`:
  the bundled photos or a folder, preprocessed by the file's own data config). On
  x86-64 without VNNI the weights are 7-bit (``reduce_range=True``), as ONNX Runtime's
  quantization documentation recommends for U8S8 there (:mod:`pytest_onnx_parity.cpu`). The
  file goes through ``quant_pre_process`` (symbolic shape inference and ONNX Runtime's
  graph optimisations, e.g. Conv+BatchNorm folding) first; when that fails the file
  is quantized as it is and the options record why.
* ``mode="dynamic"`` (transformers, MLPs): int8 weights of MatMul/Gemm, activations
  quantized at run time; needs no images.

An int8 file's logits differ from torch float32 by 5-300% of their RMS even when it
classifies as well, so it is judged by classification on real images:
:func:`int8_verdict` (top-1 agreement with torch, and accuracy drop on labelled
images). With random weights that verdict means nothing (both sides are ~0%
accurate and agreement reflects noise), so it is skipped with that reason.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from .precision import PrecisionError, _load_source, _require_float32, save_variant
from .tolerances import PRECISION_PROFILES, logit_rms

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["INT8_MODES", "Int8Verdict", "calibration_images", "compare_opt_levels", "int8_reduce_range_choice",
           "int8_verdict", "to_int8"]

INT8_MODES = ("static", "dynamic")
_INT8 = PRECISION_PROFILES["int8"]
DEFAULT_MIN_TOP1_AGREEMENT: float = _INT8.min_top1_agreement  # type: ignore[assignment]
DEFAULT_MAX_ACCURACY_DROP: float = _INT8.max_accuracy_drop  # type: ignore[assignment]


def calibration_images(
    onnx_file: "str | os.PathLike[str]",
    images: "str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None" = None,
) -> "np.ndarray":
    """Real images preprocessed by the file's own data config (float32 NCHW).

    ``images``: ``None`` for the bundled sample photos, a folder, or a list of files.
    """
    from .images import real_batch

    batch, _ = real_batch(str(onnx_file), images)
    return batch


def _as_batches(calibration_batches: Any) -> list["np.ndarray"]:
    import numpy as np

    if calibration_batches is None:
        return []
    if isinstance(calibration_batches, np.ndarray):
        items: Iterable[Any] = [calibration_batches]
    else:
        items = calibration_batches
    out = []
    for b in items:
        a = np.asarray(b, dtype=np.float32)
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4:
            raise PrecisionError(f"calibration batches must be NCHW float arrays, got shape {a.shape}")
        out.extend(a[i:i + 1] for i in range(a.shape[0]))  # one image per run: any batch axis works
    return out


def to_int8(
    src_onnx: "str | os.PathLike[str]",
    dst_onnx: "str | os.PathLike[str]",
    calibration_batches: "np.ndarray | Iterable[np.ndarray] | None" = None,
    *,
    mode: str = "static",
    per_channel: bool = True,
    preprocess: bool = True,
    reduce_range: bool | None = None,
    activations: str = "uint8",
) -> Path:
    """Quantize a float32 ONNX file to int8; return ``dst_onnx``.

    ``calibration_batches``: real images, preprocessed (an NCHW array or an iterable of
    them; :func:`calibration_images` makes one from the bundled photos or a folder).
    Required for ``mode="static"``, ignored for ``"dynamic"``. ``per_channel`` quantizes
    weights per output channel. The source's metadata is kept; ``onnx_parity.precision``
    is ``"int8"`` and ``onnx_parity.precision_options`` records mode, per_channel, the
    number of calibration images and whether ``quant_pre_process`` ran.

    ``reduce_range``: quantize weights to 7 bits; ``None`` (default) follows ONNX Runtime's
    advice for this CPU (:func:`pytest_onnx_parity.cpu.int8_reduce_range`: ``True`` on x86-64
    without VNNI, where U8S8 kernels can saturate); the options record the choice, why, and
    the CPU. ``activations``: ``"uint8"`` (U8S8, the default) or ``"int8"`` (S8S8), static mode.
    """
    import tempfile

    if mode not in INT8_MODES:
        raise PrecisionError(f"unknown int8 mode {mode!r}: choose one of {', '.join(INT8_MODES)}")
    if activations not in ("uint8", "int8"):
        raise PrecisionError(f"unknown int8 activation type {activations!r}: choose uint8 (U8S8) or int8 (S8S8)")
    src = Path(src_onnx)
    proto = _load_source(src)
    _require_float32(proto, src, "int8")
    props = {p.key: p.value for p in proto.metadata_props}
    del proto
    batches = _as_batches(calibration_batches) if mode == "static" else []
    if mode == "static" and not batches:
        raise PrecisionError(
            "static int8 quantization needs calibration images: pass calibration_batches="
            "pytest_onnx_parity.quantize.calibration_images(onnx_file) (the bundled photos) or "
            "calibration_images(onnx_file, 'path/to/folder'), or use mode='dynamic'")
    t0 = time.perf_counter()
    options: dict[str, Any] = {"mode": mode, "per_channel": per_channel, "calibration_images": len(batches)}
    reduce_range, options["reduce_range_reason"] = _reduce_range(reduce_range)
    options["reduce_range"] = reduce_range
    from .cpu import cpu_info

    options["cpu"] = cpu_info()  # int8 kernels (and so this file's figures) depend on the instruction set
    with tempfile.TemporaryDirectory(prefix="onnx-parity-int8-") as tmp:
        model_in = str(src)
        if preprocess:
            model_in, options["pre_process"] = _pre_process(src, Path(tmp) / "pre.onnx")
        out = Path(tmp) / "int8.onnx"
        try:
            _quantize(model_in, out, batches, mode=mode, per_channel=per_channel, reduce_range=reduce_range,
                      activations=activations)
        except PrecisionError:
            raise
        except Exception as exc:
            raise PrecisionError(f"int8 {mode} quantization of {src} failed: {type(exc).__name__}: "
                                 f"{str(exc)[:300]}") from exc
        import onnx

        quantized = onnx.load(str(out), load_external_data=True)
        options.update({"quantizer": "onnxruntime.quantization", "format": "QDQ" if mode == "static" else "dynamic",
                        "activations": activations if mode == "static" else "uint8 (dynamic)",
                        "weights": "int8 (7-bit range)" if reduce_range else "int8",
                        "convert_s": round(time.perf_counter() - t0, 3)})
        from .precision import _version

        options["onnxruntime"] = _version("onnxruntime")
        return save_variant(quantized, dst_onnx, props, "int8", options)


def _pre_process(src: Path, dst: Path) -> tuple[str, str]:
    """``quant_pre_process`` into ``dst``; on failure the source itself, with the reason."""
    import warnings

    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
        return str(dst), "ran"
    except Exception as exc:  # symbolic shape inference does not know every op: quantize the file as it is
        return str(src), f"skipped: {type(exc).__name__}: {str(exc)[:200]}"


def int8_reduce_range_choice(reduce_range: bool | None = None) -> bool:
    """The ``reduce_range`` a :func:`to_int8` call with this argument uses on this CPU."""
    return _reduce_range(reduce_range)[0]


def _reduce_range(given: bool | None) -> tuple[bool, str]:
    """``(reduce_range, why)``: as given, or ONNX Runtime's advice for this CPU."""
    from .cpu import cpu_flags_text, cpu_info, has_vnni, int8_reduce_range, is_x86

    info = cpu_info()
    cpu = f"{info.get('model') or 'unknown CPU'} ({info.get('machine')}; flags: {cpu_flags_text(info)})"
    advice = int8_reduce_range(info)
    if advice:
        why = "x86-64 without VNNI: ONNX Runtime recommends reduce_range for U8S8 there (VPMADDUBSW saturation)"
    elif is_x86(info) and has_vnni(info):
        why = "x86-64 with VNNI: U8S8 does not saturate, full 8-bit weights"
    else:
        why = "not x86-64: U8S8 does not saturate, full 8-bit weights"
    if given is None:
        return advice, f"auto: {why}; CPU {cpu}"
    agrees = "as" if bool(given) == advice else "against"
    return bool(given), f"given, {agrees} ONNX Runtime's advice for this CPU ({why}); CPU {cpu}"


def _quantize(model_in: str, out: Path, batches: list["np.ndarray"], *, mode: str, per_channel: bool,
              reduce_range: bool = False, activations: str = "uint8") -> None:
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    if mode == "dynamic":
        quantize_dynamic(model_in, str(out), per_channel=per_channel, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"], reduce_range=reduce_range)
        return
    input_name = onnx.load(model_in, load_external_data=False).graph.input[0].name

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, Any] | None:
            b = next(self._it, None)
            return None if b is None else {input_name: b}

    quantize_static(model_in, str(out), _Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    reduce_range=reduce_range, weight_type=QuantType.QInt8,
                    activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8)


# --------------------------------------------------------------------------- verdict


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

    from .compare import to_numpy

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

    from .compare import to_numpy

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
        if drop > max_accuracy_drop:
            problems.append(f"int8 top-1 accuracy {acc_q:.1f}% is {drop:.1f} pp below torch's {acc_t:.1f}% "
                            f"(at most {max_accuracy_drop:g} pp allowed)")
    else:
        figures["accuracy_drop_pp"] = None
        text += "; accuracy not measured (no labels: pass a labelled folder, class sub-folders named by synset)"
    if problems:
        return Int8Verdict("failed", "int8 file classifies differently from the torch model: " + "; ".join(problems) +
                           f". ({text}.) Thresholds: min_top1_agreement, max_accuracy_drop.", figures)
    return Int8Verdict("passed", text, figures)
