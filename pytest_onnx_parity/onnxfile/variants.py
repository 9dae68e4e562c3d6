"""The file a matrix variant runs: the float32 export converted to its precision, with its
preprocessing embedded when asked; derived files are cached under keys of their own.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import VariantSkip
from .file_precision import PRECISIONS

if TYPE_CHECKING:  # pragma: no cover
    from ..options import ParityOptions
    from .export import OnnxExport


def int8_format(reduce_range: bool) -> str:
    """The int8 settings of the package's own int8 files, as a cache-key value: U8S8 (uint8 activations, int8
    weights), with 7-bit weights (``reduce_range``) on CPUs where ONNX Runtime recommends it (runtime/environment.py)."""
    return "U8S8-reduce_range" if reduce_range else "U8S8"


def convert_precision(src: Path, dst: Path, precision: str, *, images: str | None = None,
                      reduce_range: bool | None = None) -> None:
    """Write the ``precision`` version of the float32 file ``src`` to ``dst``: the one call into fp16.py and quantize.py.

    ``reduce_range`` (int8): 7-bit weights; ``None`` follows ONNX Runtime's advice for this CPU
    (:func:`pytest_onnx_parity.runtime.environment.int8_reduce_range`)."""
    if precision == "fp16":
        from .fp16 import to_fp16

        to_fp16(src, dst)
    elif precision == "int8":
        from .quantize import calibration_stream, to_int8

        to_int8(src, dst, calibration_stream(src, images), mode="static", per_channel=True, reduce_range=reduce_range)
    else:
        raise VariantSkip(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")


def variant_export(base: "OnnxExport", options: "ParityOptions", *, workdir: str | None) -> tuple["OnnxExport", Path]:
    """The file a variant runs (``base`` converted to its precision, preprocessing embedded when asked)
    and the path of its model part (the file before embedding: what the per-layer check reads).

    Derived files are cached beside ``base`` under keys of their own (see ``export.derive_export``);
    without the cache they go into ``workdir``. An int8 file's key holds its int8 format (reduce_range or
    not, chosen by this CPU's instruction set), so a cache shared between CPUs never hands one CPU's file
    to the other.
    """
    from .export import derive_export

    out = base
    if options.simplifier != "none":
        from .simplify import simplifier_version, simplify

        name = options.simplifier
        out = derive_export(out, {"simplifier": name, "simplifier_version": simplifier_version(name)},
                            lambda s, d: simplify(s, d, name), cache_dir=options.cache_dir, use_cache=options.use_cache,
                            workdir=workdir)
    if options.precision != "fp32":
        prec = options.precision
        fields: dict[str, Any] = {"precision": prec, "calibration": options.images if prec == "int8" else None}
        rr: bool | None = None
        if prec == "int8":
            from .quantize import int8_reduce_range_choice

            rr = int8_reduce_range_choice()
            fields["int8_format"] = int8_format(rr)
        out = derive_export(out, fields, lambda s, d: convert_precision(s, d, prec, images=options.images, reduce_range=rr),
                            cache_dir=options.cache_dir, use_cache=options.use_cache, workdir=workdir)
    model_part = out.path
    if options.embed_preprocessing:
        from .embedded import write_embedded

        out = derive_export(out, {"preprocessing": "embedded", "layout": "NHWC"}, write_embedded,
                            cache_dir=options.cache_dir, use_cache=options.use_cache, workdir=workdir)
    return out, model_part
