"""The ``canvas`` preprocessor: what a web page does to a photo, in headless Chromium.

``createImageBitmap`` decodes the file (the browser converts its colour profile to sRGB unless
``colorSpaceConversion=none``), ``drawImage`` scales it onto an ``OffscreenCanvas`` of the model's size (the
way transformers.js resizes in a browser: the canvas' own smoothing, ``imageSmoothingQuality`` ``low`` unless
``quality=`` says otherwise), ``getImageData`` reads the pixels and ``(pixel / 255 - mean) / std`` normalises
them with the file's mean and std, in the page.

Options (``--onnx-parity-preprocess 'canvas(colorSpaceConversion=none,crop=center)'``):

``colorSpaceConversion``
    ``default`` (the browser's colour management) or ``none`` (pixels as stored, as Pillow decodes them).
``crop``
    ``none`` (default: the whole photo drawn straight to the model's height and width, aspect ratio not kept)
    or ``center`` (timm's geometry: the shorter edge to ``floor(size / crop_pct)``, then the centre cut out).
``quality``
    the canvas' ``imageSmoothingQuality``: ``low`` (the default), ``medium`` or ``high``.

It runs in the same Chromium as the browser runners (:mod:`..runtime.browserhost`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PreprocessError, SpecError

#: option -> its accepted values, the first the default
OPTIONS: dict[str, tuple[str, ...]] = {
    "colorSpaceConversion": ("default", "none"),
    "crop": ("none", "center"),
    "quality": ("low", "medium", "high"),
}
#: seconds one batch of photos may take in the page
CANVAS_TIMEOUT_S = 300.0


def canvas_options(options: Mapping[str, Any] | None) -> dict[str, str]:
    """``options`` checked against :data:`OPTIONS`, the defaults filled in; a :class:`SpecError` names the choices."""
    given = {str(k): str(v) for k, v in (options or {}).items()}
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        raise SpecError(f"canvas preprocessor: unknown option {', '.join(unknown)}; it takes "
                        + ", ".join(f"{k}={'|'.join(v)}" for k, v in OPTIONS.items()))
    for key, value in given.items():
        if value not in OPTIONS[key]:
            raise SpecError(f"canvas preprocessor: {key}={value!r}: choose one of {', '.join(OPTIONS[key])}")
    return {key: given.get(key, values[0]) for key, values in OPTIONS.items()}


def _source_size(path: Path) -> tuple[int, int]:
    """(width, height) the browser decodes ``path`` to: Pillow's size, turned by an EXIF orientation of 5 to 8
    (``createImageBitmap`` applies the orientation, ``imageOrientation: 'from-image'``)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except OSError as exc:
        raise PreprocessError(f"canvas preprocessor: cannot read {path}: {exc}") from exc
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _geometry(path: Path, transform: Any, crop: str) -> tuple[list[int], list[int]]:
    """The canvas size the photo is drawn to and the box read from it, ([w, h], [x, y, w, h])."""
    th, tw = transform.input_size
    if crop == "none":
        return [tw, th], [0, 0, tw, th]
    from dataclasses import replace

    rw, rh = replace(transform, crop_mode="center").resized_size(*_source_size(path))
    if rw < tw or rh < th:
        raise PreprocessError(f"canvas(crop=center): {path.name} resizes to {rw}x{rh}, smaller than the model's "
                              f"{tw}x{th} (crop_pct above 1): use the default crop=none")
    left, top = round((rw - tw) / 2.0), round((rh - th) / 2.0)
    return [rw, rh], [left, top, tw, th]


def _draw(paths: Sequence[Path], opts: Mapping[str, str], **job: Any) -> list[dict[str, Any]]:
    from ..runtime.browserhost import BrowserHostError, get_host

    host = get_host()
    try:
        got = host.call("canvas", images=[str(Path(p).resolve()) for p in paths],
                        colorSpaceConversion=opts["colorSpaceConversion"], quality=opts["quality"],
                        timeout=CANVAS_TIMEOUT_S, **job)
    except BrowserHostError as exc:
        raise PreprocessError(f"canvas preprocessor in Chromium failed: {exc}") from exc
    assert isinstance(got, list)
    return [{**o, "data": host.read_output(o["file"])} for o in got]


def canvas_preprocess(paths: Sequence[Path], data_config: Mapping[str, Any],
                      options: Mapping[str, Any] | None = None) -> np.ndarray:
    """float32 (N, 3, H, W): each photo drawn to the model's size on a canvas in headless Chromium and
    normalised there with ``data_config``'s mean and std (H, W from its ``input_size``)."""
    from .transform import EvalTransform

    opts = canvas_options(options)
    transform = EvalTransform.from_config(dict(data_config))
    if transform.channels != 3:
        raise PreprocessError("canvas preprocessor: a canvas gives RGB pixels; this model takes "
                              f"{transform.channels} channel(s)")
    th, tw = transform.input_size
    paths = [Path(p) for p in paths]
    out = np.empty((len(paths), 3, th, tw), dtype=np.float32)
    for i, path in enumerate(paths):  # one photo per call: its own canvas size and box
        resize, box = _geometry(path, transform, opts["crop"])
        (got,) = _draw([path], opts, raw=False, resize=resize, box=box, mean=list(transform.mean),
                       std=list(transform.std))
        out[i] = np.frombuffer(got["data"], dtype=np.float32).reshape(3, th, tw)
    return out


def canvas_pixels(paths: Sequence[Path], options: Mapping[str, Any] | None = None) -> list[np.ndarray]:
    """Each photo as the page decodes it, uint8 (H, W, 3) at its own size: ``createImageBitmap`` drawn 1:1 and
    read back (what the resize starts from)."""
    opts = canvas_options(options)
    got = _draw([Path(p) for p in paths], opts, raw=True)
    return [np.frombuffer(o["data"], dtype=np.uint8).reshape(o["height"], o["width"], 3) for o in got]
