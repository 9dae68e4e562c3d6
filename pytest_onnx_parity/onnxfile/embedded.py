"""A file with its preprocessing embedded: written (timm's eval transform in front of the model, from the
file's own metadata, :mod:`.pregraph`) and cut back to its model part (``onnx.utils.extract_model``),
what the per-layer check reads for a file made elsewhere.

How a run feeds such a file is :mod:`..runtime.feeds` (seeded uint8 images, larger than the model's
input so the graph resizes and crops them); its real-image check is
:func:`~..checks.real_images.check_real_images_embedded` (photos of different sizes through one session).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from ..errors import ImageError
from ..preprocessing.transform import EvalTransform, ImageLike
from .io import EXTERNAL_DATA_THRESHOLD, save_onnx
from .pregraph import GUARDS, EmbeddedInputError, EmbeddingError, SessionLike, embedded_info

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime

__all__ = ["extract_model_part", "run_embedded", "write_embedded"]


def write_embedded(src: "str | os.PathLike[str]", dst: "str | os.PathLike[str]") -> None:
    """Write ``src`` with timm's eval transform (from its own metadata) in front of it to ``dst``."""
    from .io import load_onnx_proto
    from .pregraph import embed_preprocessing

    proto = load_onnx_proto(src, weights=True)
    out = embed_preprocessing(proto, layout="NHWC")
    save_onnx(out, dst, external=out.ByteSize() > EXTERNAL_DATA_THRESHOLD)


def extract_model_part(path: "str | os.PathLike[str]", dst: "str | os.PathLike[str]") -> Path:
    """The model part of an embedded file (its graph from the model's own input on), written to ``dst``."""
    from .io import extract_part, load_onnx_proto
    from .pregraph import embedded_info

    info = embedded_info(path) or {}
    proto = load_onnx_proto(path)
    outputs = [o.name for o in proto.graph.output]
    return extract_part(path, dst, [info["model_input"]], outputs)


def run_embedded(
    session_or_path: SessionLike, images: ImageLike | Iterable[ImageLike], *, output: int = 0,
) -> np.ndarray:
    """Run a file with embedded preprocessing on decoded images; the ``output``-th output, stacked.

    ``images``: file paths, PIL images (RGB, RGBA; other modes are converted
    to RGB as timm's loader does) or uint8 arrays HxWx3 / HxWx4 (HxW and HxWx1
    are grey), or one of them. The graph itself makes the grayscale input of a
    1-channel model (Pillow's luma), so images go in as RGB either way. Images of the same size go through ONNX Runtime as one
    batch, the others one by one. Bad pixels raise :class:`EmbeddedInputError`
    before anything runs, naming the image and the fix.
    """
    from ..preprocessing.decode import _as_items

    session = _session(session_or_path)
    info = embedded_info(session)
    if info is None:
        raise EmbeddingError(
            "this model has no embedded preprocessing (metadata key onnx_parity.preprocessing); "
            "feed it preprocess(images, config) instead, or build it with embed_preprocessing"
        )
    transform = EvalTransform.from_config(info["data_config"])
    arrays = [_pixels(item, i, transform) for i, item in enumerate(_as_items(images))]
    if not arrays:
        raise EmbeddedInputError("no images to run")
    if info["layout"] == "NCHW":
        arrays = [a.transpose(2, 0, 1) for a in arrays]
    from ..runtime.values import run_feeds

    results: list[np.ndarray | None] = [None] * len(arrays)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault(a.shape, []).append(i)
    for idx in groups.values():
        batch = np.stack([arrays[i] for i in idx])
        try:
            out = run_feeds(session, None, {info["input"]: batch})[output]
        except Exception as exc:  # ONNX Runtime's own errors: say which guard failed
            guard = next((m for m in GUARDS.values() if m in str(exc)), None)
            if guard is None:
                raise
            raise EmbeddedInputError(f"the graph rejected images {idx}: {guard.replace('_', ' ')}") from exc
        for j, i in enumerate(idx):
            results[i] = out[j]
    return np.stack(results)  # type: ignore[arg-type]


def _session(session_or_path: SessionLike) -> "onnxruntime.InferenceSession":
    if hasattr(session_or_path, "run"):
        return session_or_path  # type: ignore[return-value]
    from ..runtime.session import make_session

    return make_session(session_or_path)  # type: ignore[arg-type]


def _pixels(item: Any, index: int, transform: EvalTransform) -> np.ndarray:
    """One image as a uint8 HxWx3 or HxWx4 array, checked as the graph would check it."""
    from PIL import Image

    from ..preprocessing.decode import check_pixels, open_image, to_rgb

    if isinstance(item, (str, os.PathLike)):
        try:
            array = np.asarray(open_image(item))
        except ImageError as exc:
            raise EmbeddedInputError(f"image {index}: {exc}") from None
    elif isinstance(item, Image.Image):
        array = np.asarray(item if item.mode in ("RGB", "RGBA") else to_rgb(item))
    elif isinstance(item, np.ndarray) or hasattr(item, "__array__"):
        try:
            array = check_pixels(np.asarray(item))
        except ImageError as exc:
            raise EmbeddedInputError(f"image {index}: {exc}") from None
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
    else:
        raise EmbeddedInputError(f"image {index}: cannot feed a {type(item).__name__}; pass paths, PIL images or arrays")
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        raise EmbeddedInputError(f"image {index}: an image of shape {array.shape} has no pixels")
    new_w, new_h = transform.resized_size(width, height)
    if new_w < 1 or new_h < 1:
        raise EmbeddedInputError(
            f"image {index}: {width}x{height} pixels resize to {new_w}x{new_h} in crop_mode {transform.crop_mode!r} "
            "(timm's transform fails on it too). Use images whose aspect ratio is less extreme."
        )
    return np.ascontiguousarray(array)
