"""Checks on a file with its preprocessing embedded (uint8 pixels in, logits out).

Such a file (``export_onnx(..., embed_preprocessing=True)``, :mod:`.pregraph`) is fed
decoded pixels, so a parity run feeds it differently:

``logits`` / ``topk`` / ``batch_consistency``
    seeded random uint8 images, larger than the model's input so the graph resizes and
    crops them; torch runs on :func:`preprocess` of the same pixels (equal to timm's
    transform, tested in tests/test_preprocess.py), ONNX Runtime on the pixels themselves.
``real_images``
    photos of their own, different sizes through one session (:func:`run_embedded`)
    against torch on timm's own eval transform of the same photos.
``layers``
    the model part: the file before embedding, or the graph cut at the model's input
    (``onnx.utils.extract_model``) for a file made elsewhere.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .files import EXTERNAL_DATA_THRESHOLD, save_onnx
from .results import CheckResult

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime
    import torch

    from .options import ParityOptions

__all__ = ["PixelFeed", "TensorFeed", "check_real_images_embedded", "extract_model_part", "feed_for", "write_embedded"]

#: Random images are this much larger than the model's input, so the graph's resize and crop run.
EXTRA_PIXELS = (37, 53)


def write_embedded(src: "str | os.PathLike[str]", dst: "str | os.PathLike[str]") -> None:
    """Write ``src`` with timm's eval transform (from its own metadata) in front of it to ``dst``."""
    import onnx

    from .pregraph import embed_preprocessing

    proto = onnx.load(str(src), load_external_data=True)
    out = embed_preprocessing(proto, layout="NHWC")
    save_onnx(out, dst, external=out.ByteSize() > EXTERNAL_DATA_THRESHOLD)


def extract_model_part(path: "str | os.PathLike[str]", dst: "str | os.PathLike[str]") -> Path:
    """The model part of an embedded file (its graph from the model's own input on), written to ``dst``."""
    import onnx
    import onnx.utils

    from .pregraph import embedded_info

    info = embedded_info(path) or {}
    proto = onnx.load(str(path), load_external_data=False)
    outputs = [o.name for o in proto.graph.output]
    onnx.utils.extract_model(str(path), str(dst), [info["model_input"]], outputs)
    return Path(dst)


class TensorFeed:
    """A plain file: float32 NCHW batches, normalised random pixels."""

    embedded = False

    def batch(self, config: dict[str, Any], batch_size: int, seed: int) -> tuple[np.ndarray, Any]:
        from .forward import random_batch

        x = random_batch(config, batch_size, seed)
        return x, x

    def run(self, session: "onnxruntime.InferenceSession", raw: Any) -> np.ndarray:
        from .forward import ort_forward

        return ort_forward(session, raw)

    def one(self, raw: Any, i: int) -> Any:
        return raw[i:i + 1]


class PixelFeed(TensorFeed):
    """An embedded file: seeded random uint8 images in; torch sees ``preprocess`` of them."""

    embedded = True

    def batch(self, config: dict[str, Any], batch_size: int, seed: int) -> tuple[np.ndarray, Any]:
        from .preprocessing import preprocess

        h, w = config["input_size"][1:]
        rng = np.random.default_rng(seed)
        pixels = rng.integers(0, 256, (batch_size, h + EXTRA_PIXELS[0], w + EXTRA_PIXELS[1], 3), dtype=np.uint8)
        return preprocess(list(pixels), config), pixels

    def run(self, session: "onnxruntime.InferenceSession", raw: Any) -> np.ndarray:
        from .errors import OnnxFileError
        from .pregraph import run_embedded

        try:
            out = run_embedded(session, list(raw))
        except Exception as exc:  # ONNX Runtime's own failure: the same error class as ort_forward's
            if isinstance(exc, OnnxFileError):
                raise
            raise OnnxFileError(f"ONNX Runtime failed to run the embedded file on uint8 images {tuple(raw.shape)}: "
                                f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}") from exc
        return np.asarray(out, dtype=np.float32)


def feed_for(embedded: bool) -> TensorFeed:
    return PixelFeed() if embedded else TensorFeed()


def check_real_images_embedded(model: "torch.nn.Module", session: "onnxruntime.InferenceSession",
                               options: "ParityOptions") -> CheckResult:
    """Photos of different sizes through one session against torch on timm's transform of the same photos."""
    from .compare import compare_logits, compare_topk
    from .forward import torch_forward
    from .images import bundled_image_paths, find_images, load_images
    from .pregraph import run_embedded
    from .realcheck import e2e_tolerance, timm_eval_transform

    paths: Sequence[Path] = find_images(options.images) if options.images else bundled_image_paths()
    images = load_images(paths)  # decoded as timm's loader does; every unreadable file named in one ImageError
    if not images:
        return CheckResult("real_images", "skipped", "no images to compare")
    tf = timm_eval_transform(model, options.test_time)
    x = np.stack([tf(im).numpy() for im in images])
    e = np.concatenate([torch_forward(model, x[i:i + 16]) for i in range(0, len(x), 16)])
    a = np.asarray(run_embedded(session, images), dtype=np.float32)
    sizes = sorted({im.size for im in images})
    atol, rtol, _ = e2e_tolerance(e, options)
    logits_cmp = compare_logits(e, a, atol=atol, rtol=rtol)
    if logits_cmp.expected_nonfinite:
        return CheckResult("real_images", "error", "inconclusive: torch's own logits on the real images hold NaN or Inf, "
                           "so no comparison with them can pass or fail the export.\n" + logits_cmp.message())
    topk_cmp = compare_topk(e, a, k=min(options.topk, e.shape[-1]), atol=atol, rtol=rtol, min_agreement=options.min_agreement)
    n = len(images)
    agree = float((e.argmax(-1) == a.argmax(-1)).mean())
    details = {"images": n, "distinct_sizes": len(sizes), "source": str(options.images or "bundled sample photos"),
               "max_abs_diff": logits_cmp.max_abs_diff, "top1_agreement": agree, "atol": atol, "rtol": rtol,
               "preprocessing": "embedded"}
    head = (f"{n} real images of {len(sizes)} sizes as raw pixels through one session (preprocessing in the graph) "
            f"against torch on timm's transform: top-1 agreement {agree:.1%}, max logit diff {logits_cmp.max_abs_diff:.3g}")
    failures = []
    if not logits_cmp.passed:
        failures.append(logits_cmp.message("Logits on real images differ (embedded preprocessing against timm's transform)!"))
    if not topk_cmp.passed:
        failures.append(topk_cmp.message())
    return CheckResult("real_images", "failed" if failures else "passed", "\n".join([head, *failures]), details)
