"""int8 variants of a float32 export, and the verdict on them.

:func:`to_int8` quantizes a float32 file made by :func:`pytest_onnx_parity.export_onnx`
with ``onnxruntime.quantization``:

* ``mode="static"`` (CNNs): QDQ format, uint8 activations, int8 weights (per output
  channel by default), MinMax calibration on real images (:func:`calibration_images`:
  the bundled photos or a folder, preprocessed by the file's own data config). On
  x86-64 without VNNI the weights are 7-bit (``reduce_range=True``), as ONNX Runtime's
  quantization documentation recommends for U8S8 there (:mod:`pytest_onnx_parity.runtime.environment`). The
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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from .file_precision import PrecisionError, _load_source, _require_float32, save_variant

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

#: calibration runs whose intermediate values ONNX Runtime's MinMax calibrator holds before folding them into ranges
CALIB_FOLD = 16

__all__ = ["INT8_MODES", "calibration_images", "calibration_stream", "int8_reduce_range_choice", "to_int8"]

INT8_MODES = ("static", "dynamic")


def calibration_images(
    onnx_file: "str | os.PathLike[str]",
    images: "str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None" = None,
) -> "np.ndarray":
    """Real images preprocessed by the file's own data config (float32 NCHW), all in one array.

    ``images``: ``None`` for the bundled sample photos, a folder, or a list of files. For a large folder,
    :func:`calibration_stream` holds one batch at a time.
    """
    from ..preprocessing.images import real_batch

    batch, _ = real_batch(str(onnx_file), images)
    return batch


def calibration_stream(
    onnx_file: "str | os.PathLike[str]",
    images: "str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None" = None, *, batch_size: int = 16,
) -> "Iterator[np.ndarray]":
    """:func:`calibration_images` batch by batch (each photo decoded when its batch comes): memory stays flat with
    the folder's size."""
    from ..preprocessing.images import _resolve_paths, iter_batches

    for batch, _ in iter_batches(_resolve_paths(images), str(onnx_file), batch_size=batch_size):
        yield batch


class _Batches:
    """Calibration batches as ONNX Runtime's reader takes them, one image a run, counted as they stream."""

    def __init__(self, calibration_batches: Any) -> None:
        import numpy as np

        if calibration_batches is None:
            items: Iterable[Any] = []
        elif isinstance(calibration_batches, np.ndarray):
            items = [calibration_batches]
        else:
            items = calibration_batches
        self._items = iter(items)
        self._pending: list[Any] = []
        self.count = 0
        self._first = self._next()

    def _next(self) -> "np.ndarray | None":
        import numpy as np

        while not self._pending:
            b = next(self._items, None)
            if b is None:
                return None
            a = np.asarray(b, dtype=np.float32)
            if a.ndim == 3:
                a = a[None]
            if a.ndim != 4:
                raise PrecisionError(f"calibration batches must be NCHW float arrays, got shape {a.shape}")
            self._pending = [a[i:i + 1] for i in range(a.shape[0])]  # one image per run: any batch axis works
        self.count += 1
        return self._pending.pop(0)

    def __bool__(self) -> bool:
        return self._first is not None

    def __iter__(self) -> "Iterator[np.ndarray]":
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        while (b := self._next()) is not None:
            yield b


def _as_batches(calibration_batches: Any) -> "_Batches":
    return _Batches(calibration_batches)


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
    nodes_to_exclude: "Iterable[str]" = (),
) -> Path:
    """Quantize a float32 ONNX file to int8; return ``dst_onnx``.

    ``calibration_batches``: real images, preprocessed (an NCHW array or an iterable of
    them; :func:`calibration_images` makes one from the bundled photos or a folder).
    Required for ``mode="static"``, ignored for ``"dynamic"``. ``per_channel`` quantizes
    weights per output channel. The source's metadata is kept; ``onnx_parity.precision``
    is ``"int8"`` and ``onnx_parity.precision_options`` records mode, per_channel, the
    number of calibration images and whether ``quant_pre_process`` ran.

    ``reduce_range``: quantize weights to 7 bits; ``None`` (default) follows ONNX Runtime's
    advice for this CPU (:func:`pytest_onnx_parity.runtime.environment.int8_reduce_range`: ``True`` on x86-64
    without VNNI, where U8S8 kernels can saturate); the options record the choice, why, and
    the CPU. ``activations``: ``"uint8"`` (U8S8, the default) or ``"int8"`` (S8S8), static mode.
    ``nodes_to_exclude``: node names left in float, passed to ``onnxruntime.quantization`` as they are
    (the per-layer check of an int8 file prints the list of the modules that quantise worst).
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
            "pytest_onnx_parity.onnxfile.quantize.calibration_images(onnx_file) (the bundled photos) or "
            "calibration_images(onnx_file, 'path/to/folder'), or use mode='dynamic'")
    t0 = time.perf_counter()
    exclude = sorted(set(nodes_to_exclude))
    options: dict[str, Any] = {"mode": mode, "per_channel": per_channel, **({"nodes_to_exclude": exclude} if exclude else {})}
    reduce_range, options["reduce_range_reason"] = _reduce_range(reduce_range)
    options["reduce_range"] = reduce_range
    from ..runtime.environment import cpu_info

    options["cpu"] = cpu_info()  # int8 kernels (and so this file's figures) depend on the instruction set
    with tempfile.TemporaryDirectory(prefix="onnx-parity-int8-") as tmp:
        model_in = str(src)
        if preprocess:
            model_in, options["pre_process"] = _pre_process(src, Path(tmp) / "pre.onnx")
        out = Path(tmp) / "int8.onnx"
        try:
            _quantize(model_in, out, batches, mode=mode, per_channel=per_channel, reduce_range=reduce_range,
                      activations=activations, nodes_to_exclude=exclude)
        except PrecisionError:
            raise
        except Exception as exc:
            raise PrecisionError(f"int8 {mode} quantization of {src} failed: {type(exc).__name__}: "
                                 f"{str(exc)[:300]}") from exc
        from .io import load_onnx_proto

        if mode == "static":
            options["calibration_images"] = batches.count  # counted as they streamed
        quantized = load_onnx_proto(out, weights=True)
        options.update({"quantizer": "onnxruntime.quantization", "format": "QDQ" if mode == "static" else "dynamic",
                        "activations": activations if mode == "static" else "uint8 (dynamic)",
                        "weights": "int8 (7-bit range)" if reduce_range else "int8",
                        "convert_s": round(time.perf_counter() - t0, 3)})
        from .file_precision import _version

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
    from ..runtime.environment import cpu_flags_text, cpu_info, has_vnni, int8_reduce_range, is_x86

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


def _quantize(model_in: str, out: Path, batches: Iterable["np.ndarray"], *, mode: str, per_channel: bool,
              reduce_range: bool = False, activations: str = "uint8", nodes_to_exclude: list[str] | None = None) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

    if mode == "dynamic":
        quantize_dynamic(model_in, str(out), per_channel=per_channel, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"], reduce_range=reduce_range,
                         nodes_to_exclude=nodes_to_exclude or None)
        return
    from .io import load_onnx_proto

    input_name = load_onnx_proto(model_in).graph.input[0].name

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, Any] | None:
            b = next(self._it, None)
            return None if b is None else {input_name: b}

    # the ranges are folded every CALIB_FOLD runs: the calibrator holds a few runs' values, not the whole folder's
    quantize_static(model_in, str(out), _Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    reduce_range=reduce_range, weight_type=QuantType.QInt8, nodes_to_exclude=nodes_to_exclude or None,
                    activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
                    extra_options={"CalibMaxIntermediateOutputs": CALIB_FOLD})


# --------------------------------------------------------------------------- verdict



