"""What a session is fed: float32 batches, or uint8 pixels for a file with embedded preprocessing.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime



#: Random images are this much larger than the model's input, so the graph's resize and crop run.
EXTRA_PIXELS = (37, 53)


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
        from ..preprocessing.transform import preprocess

        h, w = config["input_size"][1:]
        rng = np.random.default_rng(seed)
        pixels = rng.integers(0, 256, (batch_size, h + EXTRA_PIXELS[0], w + EXTRA_PIXELS[1], 3), dtype=np.uint8)
        return preprocess(list(pixels), config), pixels

    def run(self, session: "onnxruntime.InferenceSession", raw: Any) -> np.ndarray:
        from ..errors import OnnxFileError
        from ..onnxfile.embedded import run_embedded

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
