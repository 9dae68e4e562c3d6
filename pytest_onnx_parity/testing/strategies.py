"""Hypothesis strategies for downstream test suites: images, data configs, batches.

::

    from hypothesis import given
    from pytest_onnx_parity import strategies as ops

    @given(ops.batches(my_data_config, max_size=2))
    def test_my_onnx_model(batch):  # float32 NCHW, normalised as the model wants
        ...

* :func:`images`: PIL images (or uint8 arrays) of odd sizes and aspect ratios
  (1x1, 1x500, 7x3, ...), in many Pillow modes, with extreme contents:
  black, white, saturated colours, noise, gradients, checkerboards.
* :func:`data_configs`: plausible timm data configs (every crop mode, square
  and non-square input sizes, crop_pct from small to 1.0).
* :func:`pretrained_data_configs`: the distinct data configs of timm's own
  pretrained models (imports timm on first draw).
* :func:`batches`: preprocessed batches shaped by a data config.

This module imports Hypothesis; the plugin never imports it, so Hypothesis is
needed only by the suites that use it.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy
from PIL import Image

from ..preprocessing.transform import CROP_MODES, EvalTransform, preprocess

__all__ = [
    "CONTENTS",
    "MODES",
    "batches",
    "data_configs",
    "image_arrays",
    "images",
    "pretrained_data_configs",
]

#: Pillow modes :func:`images` draws from by default; all convert to RGB as timm's loader does.
MODES = ("RGB", "L", "RGBA", "P", "CMYK", "I;16", "I", "1", "LA")
#: Image contents: extremes first, so that shrinking ends on them.
CONTENTS = ("black", "white", "saturated", "noise", "gradient", "checker")

_MEAN_STD = (
    ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet
    ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # Inception / ViT augreg
    ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),  # OpenAI CLIP
    ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
)
_SATURATED = np.array(
    [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255], [0, 255, 255]],
    dtype=np.uint8,
)


def _side(min_side: int, max_side: int) -> SearchStrategy[int]:
    extremes = sorted({min_side, min(min_side + 1, max_side), max_side})
    return st.one_of(st.integers(min_side, max_side), st.sampled_from(extremes))


def _rgb(content: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    if content == "black":
        return np.zeros((height, width, 3), np.uint8)
    if content == "white":
        return np.full((height, width, 3), 255, np.uint8)
    if content == "saturated":
        return _SATURATED[rng.integers(0, len(_SATURATED), (height, width))]
    if content == "noise":
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if content == "gradient":
        y = np.linspace(0, 255, height)[:, None]
        x = np.linspace(0, 255, width)[None, :]
        return np.stack([np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width)),
                         (x + y) / 2], axis=-1).round().astype(np.uint8)
    if content == "checker":
        board = (np.indices((height, width)).sum(axis=0) % 2).astype(np.uint8) * 255
        return np.repeat(board[:, :, None], 3, axis=2)
    raise ValueError(f"unknown content {content!r}; choose from {CONTENTS}")


def _in_mode(rgb: np.ndarray, mode: str, rng: np.random.Generator) -> Image.Image:
    height, width = rgb.shape[:2]
    if mode == "RGB":
        return Image.fromarray(rgb)
    if mode == "L":
        return Image.fromarray(rgb[:, :, 0])
    if mode == "RGBA":
        alpha = rng.integers(0, 256, (height, width, 1), dtype=np.uint8)
        return Image.fromarray(np.concatenate([rgb, alpha], axis=2))
    if mode == "LA":
        alpha = rng.integers(0, 256, (height, width), dtype=np.uint8)
        return Image.frombytes("LA", (width, height), np.stack([rgb[:, :, 0], alpha], axis=2).tobytes())
    if mode == "P":  # indices from the pixels, a random palette
        image = Image.frombytes("P", (width, height), rgb[:, :, 0].tobytes())
        image.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
        return image
    if mode == "CMYK":
        k = rng.integers(0, 256, (height, width, 1), dtype=np.uint8)
        return Image.frombytes("CMYK", (width, height), np.concatenate([rgb, k], axis=2).tobytes())
    if mode == "I;16":  # 16-bit: values above 255 clip when converted to RGB
        return Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257)
    if mode == "I":  # 32-bit signed, negative values too
        return Image.fromarray(rgb[:, :, 0].astype(np.int32) * 3 - 200)
    if mode == "1":
        return Image.fromarray(rgb[:, :, 0] > 127)
    raise ValueError(f"unsupported mode {mode!r}; choose from {MODES}")


@st.composite
def images(
    draw: Any,
    min_side: int = 1,
    max_side: int = 64,
    modes: Sequence[str] = MODES,
    contents: Sequence[str] = CONTENTS,
    as_array: bool = False,
) -> Image.Image | np.ndarray:
    """PIL images (or, with ``as_array=True``, HxWx3 uint8 arrays) of odd sizes and contents.

    Width and height are drawn independently from ``min_side`` .. ``max_side``,
    with the extremes favoured, so 1x1, 1xN and Nx1 images come up early.
    ``modes`` are Pillow modes from :data:`MODES`; ``contents`` from
    :data:`CONTENTS`. Arrays are always RGB.
    """
    if not 1 <= min_side <= max_side:
        raise ValueError(f"need 1 <= min_side <= max_side, got {min_side}, {max_side}")
    width = draw(_side(min_side, max_side))
    height = draw(_side(min_side, max_side))
    content = draw(st.sampled_from(list(contents)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rgb = _rgb(content, height, width, rng)
    if as_array:
        return rgb
    return _in_mode(rgb, draw(st.sampled_from(list(modes))), rng)


def image_arrays(min_side: int = 1, max_side: int = 64, contents: Sequence[str] = CONTENTS) -> SearchStrategy[np.ndarray]:
    """HxWx3 uint8 arrays; :func:`images` with ``as_array=True``."""
    return images(min_side=min_side, max_side=max_side, contents=contents, as_array=True)


@st.composite
def data_configs(
    draw: Any,
    min_side: int = 8,
    max_side: int = 64,
    interpolations: Sequence[str] = ("bilinear", "bicubic"),
    crop_modes: Sequence[str] = CROP_MODES,
    min_crop_pct: float = 0.25,
    max_crop_pct: float = 1.0,
    square: bool | None = None,
) -> dict[str, Any]:
    """Plausible timm data configs: what :func:`timm.data.resolve_data_config` returns.

    Input sizes run from ``min_side`` to ``max_side`` (square, or not when
    ``square`` is False; either when None), crop_pct from ``min_crop_pct`` to
    ``max_crop_pct`` (timm's own values such as 0.875 and 1.0 favoured),
    mean and std from common sets or drawn freely.
    """
    if max_crop_pct > min_side:
        raise ValueError(f"max_crop_pct {max_crop_pct} must not exceed min_side {min_side}")
    height = draw(_side(min_side, max_side))
    is_square = draw(st.booleans()) if square is None else square
    width = height if is_square else draw(_side(min_side, max_side).filter(lambda w: w != height or min_side == max_side))
    timm_pcts = [p for p in (0.875, 0.9, 0.95, 1.0) if min_crop_pct <= p <= max_crop_pct]
    crop_pct = draw(st.one_of(
        st.sampled_from(timm_pcts or [max_crop_pct]),
        st.floats(min_crop_pct, max_crop_pct).map(lambda p: round(p, 4)).filter(lambda p: p > 0),
    ))
    mean, std = draw(st.one_of(
        st.sampled_from(_MEAN_STD),
        st.tuples(
            st.tuples(*[st.floats(0.0, 1.0)] * 3),
            st.tuples(*[st.floats(0.05, 1.0)] * 3),
        ),
    ))
    return {
        "input_size": (3, height, width),
        "interpolation": draw(st.sampled_from(list(interpolations))),
        "mean": tuple(mean),
        "std": tuple(std),
        "crop_pct": crop_pct,
        "crop_mode": draw(st.sampled_from(list(crop_modes))),
    }


_PRETRAINED: list[dict[str, Any]] = []


def _distinct_pretrained() -> list[dict[str, Any]]:
    if not _PRETRAINED:
        import timm
        import timm.data

        seen = set()
        for name in timm.list_pretrained():
            cfg = timm.data.resolve_data_config({}, pretrained_cfg=timm.models.get_pretrained_cfg(name).to_dict())
            key = (tuple(cfg["input_size"]), cfg["interpolation"], tuple(cfg["mean"]), tuple(cfg["std"]),
                   cfg["crop_pct"], cfg["crop_mode"])
            if key not in seen:
                seen.add(key)
                _PRETRAINED.append(dict(cfg))
    return _PRETRAINED


def pretrained_data_configs() -> SearchStrategy[dict[str, Any]]:
    """One of the distinct data configs of timm's pretrained models (timm imported on first draw)."""
    return st.deferred(lambda: st.sampled_from(_distinct_pretrained()))


@st.composite
def batches(
    draw: Any,
    config: Mapping[str, Any] | SearchStrategy[Mapping[str, Any]] | str,
    min_size: int = 1,
    max_size: int = 4,
    images: SearchStrategy[Any] | None = None,
    test_time: bool = False,
) -> np.ndarray:
    """float32 NCHW batches of ``min_size`` .. ``max_size`` images, preprocessed for ``config``.

    ``config`` is a data config, a strategy of them, or an ONNX path: what
    :func:`~pytest_onnx_parity.preprocessing.transform.preprocess` takes. ``images``
    defaults to :func:`images` of up to 64 pixels a side; images too thin
    for the config's crop mode (timm's transform fails on them) are left out.
    """
    if isinstance(config, SearchStrategy):
        config = draw(config)
    transform = EvalTransform.from_config(config, test_time=test_time)

    def fits(image: Any) -> bool:  # border mode cannot shrink a 1x500 image to 224x0
        width, height = (image.shape[1], image.shape[0]) if isinstance(image, np.ndarray) else image.size
        return min(transform.resized_size(width, height)) >= 1

    source = images if images is not None else _default_images
    drawn = draw(st.lists(source.filter(fits), min_size=min_size, max_size=max_size))
    return preprocess(drawn, config, test_time=test_time)


_default_images = images()
