"""Running both sides on a batch: seeded random inputs, torch, ONNX Runtime, and the
"is torch itself this sensitive?" probe. Used by every check that runs the model.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime
    import torch

    from .outputs import OutputLayout

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
    """torch on ``x``: its outputs as one flat (N, D) float32 array (:func:`~.outputs.flatten`; a classifier's
    logits as they are)."""
    return torch_forward_layout(model, x)[0]


def torch_forward_layout(model: "torch.nn.Module", x: Any) -> "tuple[np.ndarray, OutputLayout]":
    """torch on ``x``: the flat (N, D) float32 outputs and their layout (the kind decided by :func:`~.outputs.output_kind`)."""
    import torch

    from ..compare import to_numpy
    from .outputs import flatten, layout_of, output_arrays

    with torch.no_grad():
        out = model(torch.as_tensor(to_numpy(x)))
    return flatten(output_arrays(out)), layout_of(out, getattr(model, "num_classes", None))


def probe_layout(model: "torch.nn.Module", config: dict[str, Any], seed: int = 0) -> "OutputLayout":
    """The layout of the model's output on one random sample of ``config``'s input size."""
    return torch_forward_layout(model, random_batch(config, 1, seed))[1]


_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
_CHANNELS = (1, 3, 4)


def _shown(shape: Any) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else repr(d) for d in shape) + "]"


def input_layout(session: "onnxruntime.InferenceSession") -> str:
    """``"NHWC"`` when the file's first input is (N, H, W, C) with C in 1/3/4 fixed last, else ``"NCHW"``."""
    shape = session.get_inputs()[0].shape
    if len(shape) == 4:
        c1, c3 = shape[1], shape[3]
        if isinstance(c3, int) and c3 in _CHANNELS and not (isinstance(c1, int) and c1 in _CHANNELS):
            return "NHWC"
    return "NCHW"


def image_input_problem(session: "onnxruntime.InferenceSession", channels: int | None = None) -> str | None:
    """Why the file has no image input the checks can feed (None when it has one), with the fix.

    The checks feed one float input of rank 4, (N, C, H, W) or (N, H, W, C) (told apart by
    the shape: a channel count of 1, 3 or 4 fixed last), in float32, float16 or float64.
    """
    inputs = session.get_inputs()
    listed = ", ".join(f"{i.name!r} {_shown(i.shape)} {i.type}" for i in inputs) or "none"
    fix = ("The check feeds one float image batch, (N, C, H, W) or (N, H, W, C): export the classifier with one "
           "image input (preprocessing outside the graph, or see --onnx-parity-embed-preprocessing for pixels in).")
    if len(inputs) != 1:
        return f"the file's graph takes {len(inputs)} inputs ({listed}), not one image batch. {fix}"
    inp = inputs[0]
    if inp.type not in _NUMPY_TYPES or len(inp.shape) != 4:
        return f"the file's graph has no image-like input: its input is {listed}. {fix}"
    c = inp.shape[3] if input_layout(session) == "NHWC" else inp.shape[1]
    if channels is not None and isinstance(c, int) and c != channels:
        return (f"the file's input {inp.name!r} {_shown(inp.shape)} takes {c} channels; the model takes {channels}. "
                "Check that the file was exported from this model (--model / NAME in the spec).")
    return None


def fixed_batch(session: "onnxruntime.InferenceSession") -> int | None:
    """The batch size fixed in the file's first input, or None when the batch axis is dynamic."""
    shape = session.get_inputs()[0].shape
    return int(shape[0]) if shape and isinstance(shape[0], int) and shape[0] > 0 else None


def input_mismatch(session: "onnxruntime.InferenceSession", shape: tuple[int, ...]) -> str | None:
    """Why the file's first input cannot take an array of ``shape`` (None when it can), with the fix.

    ``shape`` is in the file's own layout. A batch that is a multiple of a batch size fixed in
    the file is fine: :func:`ort_forward` runs it in slices of that size.
    """
    inp = session.get_inputs()[0]
    want = list(inp.shape)
    shown = _shown(want)
    if len(want) != len(shape):
        return (f"the file's input {inp.name!r} has rank {len(want)} (shape {shown}); the check feeds an array of shape "
                f"{tuple(shape)}. Export the model with one image input of shape (N, C, H, W).")
    fixed = [(i, d, g) for i, (d, g) in enumerate(zip(want, shape)) if isinstance(d, int) and d > 0 and d != g
             and not (i == 0 and g % d == 0)]
    if not fixed:
        return None
    i, d, g = fixed[0]
    if i == 0:
        return (f"the file's input {inp.name!r} has its batch fixed at {d} (shape {shown}); given a batch of {g}. "
                f"Run batches of a multiple of {d} (batch_size={d}), or re-export with a dynamic batch axis "
                "(dynamic_axes={'input': {0: 'batch'}} for the TorchScript exporter, dynamic_shapes for dynamo).")
    return (f"the file's input {inp.name!r} expects shape {shown}; given {tuple(shape)} (axis {i}: {d} expected, {g} given). "
            "Check the model's input size (its data config) against the size the file was exported at.")


def logits_output(session: "onnxruntime.InferenceSession", num_classes: int | None = None,
                  name: str | None = None, *, what: str = "logits") -> str:
    """The name of the file's logits output; raises :class:`OnnxFileError` saying which to name when unclear.

    ``name`` (the user's choice) must be one of the outputs. Otherwise: the only output;
    or the one output of shape (N, ``num_classes``); or the only rank-2 output; or the
    first output when it is rank 2 and nothing else fits better. ``what`` names the output
    in the message (``"embedding"`` for an embedding of width ``num_classes``).
    """
    from ..errors import OnnxFileError

    outs = session.get_outputs()
    listed = ", ".join(f"{o.name!r} {_shown(o.shape)}" for o in outs)
    if name is not None:
        if name not in [o.name for o in outs]:
            raise OnnxFileError(f"the file has no output {name!r}; its outputs are {listed}. Name one of them.")
        return name
    if len(outs) == 1:
        return outs[0].name
    rank2 = [o for o in outs if len(o.shape) == 2]
    exact = [o for o in rank2 if num_classes is not None and o.shape[1] == num_classes]
    for group in (exact, rank2):
        if len(group) == 1:
            return group[0].name
    if rank2 and rank2[0] is outs[0] and not exact:
        return outs[0].name
    want = f"(N, {num_classes})" if num_classes else "(N, num_classes)"
    raise OnnxFileError(f"the file has {len(outs)} outputs ({listed}) and none is clearly the {what} {want}. "
                        f"Name the {what} output: check_parity(..., output=NAME), --onnx-parity-output NAME.")


def feature_outputs(session: "onnxruntime.InferenceSession", layout: "OutputLayout", name: str | None = None) -> list[str]:
    """The file's outputs that match a features layout, in the model's order; :class:`OnnxFileError` naming the fix.

    The outputs are matched to torch's by order: the file must have as many outputs as the
    model returns (or ``name``, a comma list of that many), each of the same shape
    (a dimension the file leaves symbolic matches any size).
    """
    from ..errors import OnnxFileError

    outs = session.get_outputs()
    listed = ", ".join(f"{o.name!r} {_shown(o.shape)}" for o in outs)
    fix = ("The file's outputs are matched to the model's by order: export every output of the model's forward, in "
           "order (the same features_only / out_indices / global_pool arguments), or name the file's outputs in the "
           "model's order: check_parity(..., output='A,B,C'), --onnx-parity-output=A,B,C.")
    by_name = {o.name: o for o in outs}
    if name is not None:
        wanted = [n.strip() for n in name.split(",") if n.strip()]
        missing = [n for n in wanted if n not in by_name]
        if missing:
            raise OnnxFileError(f"the file has no output {missing[0]!r}; its outputs are {listed}. Name {len(layout.segments)} "
                                "of them, in the model's order.")
        picked = [by_name[n] for n in wanted]
    else:
        picked = list(outs)
    if len(picked) != len(layout.segments):
        raise OnnxFileError(f"the model returns {layout.describe()}, the file {'names' if name else 'has'} {len(picked)} "
                            f"output(s) ({', '.join(f'{o.name!r} {_shown(o.shape)}' for o in picked) or 'none'}). {fix}")
    for seg, o in zip(layout.segments, picked):
        want = (None, *seg.shape)
        got = list(o.shape)
        if len(got) != len(want) or any(isinstance(g, int) and g > 0 and w is not None and g != w
                                        for g, w in zip(got, want)):
            raise OnnxFileError(f"the file's output {seg.index} {o.name!r} has shape {_shown(got)}; torch's {seg.label} "
                                f"does not fit it. {fix}")
    return [o.name for o in picked]


def choose_outputs(session: "onnxruntime.InferenceSession", layout: "OutputLayout", name: str | None = None) -> list[str]:
    """The file's outputs the checks compare with torch's of ``layout``, in order, remembered for
    :func:`ort_forward` on this session: the logits (:func:`logits_output`), the embedding (the same
    rule at its width) or every feature output (:func:`feature_outputs`)."""
    if layout.kind == "features":
        chosen = feature_outputs(session, layout, name)
    else:
        chosen = [logits_output(session, layout.width, name, what=layout.kind)]
    remember_outputs(session, chosen)
    return chosen


def remember_outputs(session: Any, names: list[str]) -> None:
    """The outputs the checks compare, kept on the runner itself (they die with it)."""
    session.chosen_outputs = list(names)


def chosen_outputs(session: "onnxruntime.InferenceSession") -> list[str]:
    """The outputs chosen for this session (:func:`choose_outputs`); unchosen: every output of a file this
    package exported with features (``features_0``, ``features_1``, ...), else :func:`logits_output`'s one."""
    chosen = getattr(session, "chosen_outputs", None)
    chosen = chosen if isinstance(chosen, list) else None
    if chosen:
        return list(chosen)
    names = [o.name for o in session.get_outputs()]
    if names and names == [f"features_{i}" for i in range(len(names))]:
        return names
    return [logits_output(session)]


def ort_outputs(session: "onnxruntime.InferenceSession", x: Any, outputs: "list[str] | None" = None) -> list[np.ndarray]:
    """ONNX Runtime on ``x`` (NCHW; cast to the input's float type): each of ``outputs`` (default:
    :func:`chosen_outputs`), float16 read as float32.

    Files as they come: an (N, H, W, C) input gets ``x`` transposed; a batch fixed in the file
    runs ``x`` in slices of that size. A shape the file cannot take, or any runtime failure,
    raises :class:`OnnxFileError` naming the input, the shapes expected and given, and what to do.
    """
    from ..compare import to_numpy
    from ..errors import OnnxFileError

    inp = session.get_inputs()[0]
    arr = to_numpy(x)
    if arr.ndim == 4 and input_layout(session) == "NHWC":
        arr = arr.transpose(0, 2, 3, 1)
    problem = input_mismatch(session, tuple(arr.shape))
    if problem:
        raise OnnxFileError(problem)
    dtype = _NUMPY_TYPES.get(inp.type, np.float32)
    names = outputs or chosen_outputs(session)
    step = fixed_batch(session) or max(len(arr), 1)
    try:
        runs = [session.run(names, {inp.name: np.ascontiguousarray(arr[i:i + step], dtype=dtype)})
                for i in range(0, len(arr), step)]
    except Exception as exc:
        reason = " ".join(str(exc).split())[:300]
        raise OnnxFileError(f"ONNX Runtime could not run the file on input {inp.name!r} (expects {_shown(inp.shape)} of "
                            f"{inp.type}; given {tuple(arr.shape)} of {np.dtype(dtype).name}). Check that the file was "
                            f"exported from this model at this input size. (runtime said: {reason})") from exc
    outs = [np.concatenate([r[k] for r in runs]) if len(runs) > 1 else runs[0][k] for k in range(len(names))]
    return [np.asarray(o, dtype=np.float32) if o.dtype == np.float16 else o for o in outs]


def ort_forward(session: "onnxruntime.InferenceSession", x: Any, outputs: "list[str] | None" = None) -> np.ndarray:
    """ONNX Runtime on ``x``: the chosen outputs (:func:`ort_outputs`) as one flat (N, D) array, as
    :func:`torch_forward` gives torch's (a classifier's logits as they are)."""
    from .outputs import flatten

    return flatten(ort_outputs(session, x, outputs))
