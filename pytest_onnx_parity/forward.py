"""Running both sides on a batch: seeded random inputs, torch, ONNX Runtime, and the
"is torch itself this sensitive?" probe. Used by every check that runs the model.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime
    import torch

#: Samples in the random batch of a parity run and of the ``random_batch`` fixture.
DEFAULT_BATCH = 2


def random_batch(config: dict[str, Any], batch_size: int = DEFAULT_BATCH, seed: int = 0) -> np.ndarray:
    """Seeded random pixels in [0, 1], normalised with the config's mean and std (float32 NCHW)."""
    c, h, w = config["input_size"]
    rng = np.random.default_rng(seed)
    x = rng.random((batch_size, c, h, w), dtype=np.float32)
    mean = np.asarray(config["mean"][:c], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(config["std"][:c], np.float32).reshape(1, -1, 1, 1)
    return ((x - mean) / std).astype(np.float32)


def torch_forward(model: "torch.nn.Module", x: Any) -> np.ndarray:
    import torch

    from .compare import to_numpy

    with torch.no_grad():
        out = model(torch.as_tensor(to_numpy(x)))
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out.float().numpy()


_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def fixed_batch(session: "onnxruntime.InferenceSession") -> int | None:
    """The batch size fixed in the file's first input, or None when the batch axis is dynamic."""
    shape = session.get_inputs()[0].shape
    return int(shape[0]) if shape and isinstance(shape[0], int) and shape[0] > 0 else None


def input_mismatch(session: "onnxruntime.InferenceSession", shape: tuple[int, ...]) -> str | None:
    """Why the file's first input cannot take an array of ``shape`` (None when it can), with the fix."""
    inp = session.get_inputs()[0]
    want = list(inp.shape)
    shown = "[" + ", ".join(str(d) if isinstance(d, int) else repr(d) for d in want) + "]"
    if len(want) != len(shape):
        return (f"the file's input {inp.name!r} has rank {len(want)} (shape {shown}); the check feeds an array of shape "
                f"{tuple(shape)}. Export the model with one image input of shape (N, C, H, W).")
    fixed = [(i, d, g) for i, (d, g) in enumerate(zip(want, shape)) if isinstance(d, int) and d > 0 and d != g]
    if not fixed:
        return None
    i, d, g = fixed[0]
    if i == 0:
        return (f"the file's input {inp.name!r} has its batch fixed at {d} (shape {shown}); given a batch of {g}. "
                f"Run batches of {d} (batch_size={d}), or re-export with a dynamic batch axis "
                "(dynamic_axes={'input': {0: 'batch'}} for the TorchScript exporter, dynamic_shapes for dynamo).")
    return (f"the file's input {inp.name!r} expects shape {shown}; given {tuple(shape)} (axis {i}: {d} expected, {g} given). "
            "Check the model's input size (its data config) against the size the file was exported at.")


def ort_forward(session: "onnxruntime.InferenceSession", x: Any) -> np.ndarray:
    """ONNX Runtime on ``x`` (cast to the input's float type); the first output, as float32.

    A shape the file cannot take, or any runtime failure, raises :class:`OnnxFileError`
    naming the input, the shapes expected and given, and what to do.
    """
    from .compare import to_numpy
    from .errors import OnnxFileError

    inp = session.get_inputs()[0]
    arr = to_numpy(x)
    problem = input_mismatch(session, tuple(arr.shape))
    if problem:
        raise OnnxFileError(problem)
    dtype = _NUMPY_TYPES.get(inp.type, np.float32)
    try:
        out = session.run(None, {inp.name: np.ascontiguousarray(arr, dtype=dtype)})[0]
    except Exception as exc:
        reason = " ".join(str(exc).split())[:400]
        raise OnnxFileError(f"ONNX Runtime failed to run the file on input {inp.name!r} (expects {inp.shape} of "
                            f"{inp.type}; given {tuple(arr.shape)}): {type(exc).__name__}: {reason}") from exc
    return np.asarray(out, dtype=np.float32) if out.dtype == np.float16 else out
