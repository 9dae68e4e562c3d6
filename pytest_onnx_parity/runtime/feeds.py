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

    def outputs(self, session: "onnxruntime.InferenceSession", raw: Any) -> list[np.ndarray]:
        """The session's chosen outputs on ``raw``, each as ONNX Runtime gives it (:func:`~.forward.ort_outputs`)."""
        from .forward import ort_outputs

        return ort_outputs(session, raw)

    def run(self, session: "onnxruntime.InferenceSession", raw: Any) -> np.ndarray:
        """The chosen outputs as one flat (N, D) array (:func:`~.outputs.flatten`)."""
        from .outputs import flatten

        return flatten(self.outputs(session, raw))

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

    def outputs(self, session: "onnxruntime.InferenceSession", raw: Any) -> list[np.ndarray]:
        from ..errors import OnnxFileError

        try:
            return embedded_outputs(session, list(raw))
        except Exception as exc:  # ONNX Runtime's own failure: the same error class as ort_forward's
            if isinstance(exc, OnnxFileError):
                raise
            raise OnnxFileError(f"ONNX Runtime failed to run the embedded file on uint8 images {tuple(raw.shape)}: "
                                f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}") from exc


def embedded_outputs(session: "onnxruntime.InferenceSession", images: list[Any]) -> list[np.ndarray]:
    """A file with embedded preprocessing on decoded images (:func:`~..onnxfile.embedded.run_embedded`): each
    of the session's chosen outputs (:func:`~.forward.chosen_outputs`), in order, as float32."""
    from ..onnxfile.embedded import run_embedded
    from .forward import chosen_outputs

    names = [o.name for o in session.get_outputs()]
    return [np.asarray(run_embedded(session, images, output=names.index(n)), dtype=np.float32)
            for n in chosen_outputs(session)]


def feed_for(embedded: bool) -> TensorFeed:
    return PixelFeed() if embedded else TensorFeed()
