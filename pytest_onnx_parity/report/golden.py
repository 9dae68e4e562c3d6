"""Golden references (``--onnx-parity-golden DIR``): the key of a golden and its file.

A golden is what one run of one spec and variant saw, kept so that later runs can be compared
with it (:mod:`..checks.golden` decides and words the check): torch's outputs and ONNX Runtime's
outputs on the file, for the run's seeded batch (its seed, shape and sha256, not the pixels),
the versions of python, torch, timm, onnx and onnxruntime it was recorded with, the weights'
identity, and the data config. No weights, no inputs (docs/ci.md measures their size).

**The key** (:func:`golden_key`) holds everything that makes two runs comparable: the model as
built (``NAME(ARGS)``), its weights (a checkpoint's sha256, or random weights' seed and method),
the variant (exporter, opset, precision, ORT level, provider, image size, preprocessing,
simplifier), the data config, the seed and shape of the batch, the file as written for a file
made elsewhere (``@FILE`` or ``onnx=``), the output picked, and for fp16 and int8 files the CPU
flags their kernels depend on. Anything else has a golden of its own: a golden is never compared
with another run's. Random weights' identity names torch's thread count; the key leaves it out
(the golden keeps it), so a golden recorded on 8 threads is compared on 2, within the tolerance.

**The file**: one JSON file per key, ``DIR/<model>-<sha256 of the key>.json``, written atomically
(:func:`~..files.write_atomic`): xdist workers and CI shards that share DIR each write their own
files and a reader never sees half of one; the folders of several shards merge by copying them
into one (keys never collide). Arrays are kept bit for bit (little-endian float32, base64); a
sample of more than :data:`MAX_VALUES` values (a features model's maps) keeps every k-th value of
each output. The same run writes the same bytes (no dates), so ``--onnx-parity-golden-update``
on an unchanged model changes nothing in version control.

Nothing here imports torch, onnx or onnxruntime.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GoldenError
from ..files import safe_name, write_atomic
from ..results import jsonable

__all__ = ["FORMAT", "Golden", "MAX_VALUES", "golden_key", "golden_path", "inputs_digest", "keep", "kept_parts",
           "plan_segments", "read_golden", "weights_key", "write_golden"]

#: the format number of a golden file; a file of another format is refused, naming the fix
FORMAT = 1
#: the most values a golden keeps of one sample (all of a classifier's logits; a features model's maps strided)
MAX_VALUES = 2048
UPDATE = "--onnx-parity-golden-update (golden_update=True)"


def weights_key(identity: str) -> str:
    """The weights' part of a key: their identity without torch's thread count (random weights name it,
    since BatchNorm calibration sums in an order that depends on it; the golden tolerance covers that)."""
    return re.sub(r":threads=\d+", "", identity)


def golden_key(**fields: Any) -> dict[str, Any]:
    """The key of a golden, as JSON gives it back (tuples as lists), so a stored key compares equal."""
    return json.loads(json.dumps(jsonable(fields), sort_keys=True))


def _digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def golden_path(folder: str | Path, key: dict[str, Any]) -> Path:
    """Where the golden of ``key`` lives in ``folder``: ``<model>-<key hash>.json``."""
    return Path(folder).expanduser() / f"{safe_name(str(key.get('model', 'model')), 80)}-{_digest(key)}.json"


def inputs_digest(x: np.ndarray) -> str:
    """sha256 of a batch (shape, dtype and bytes): the golden keeps this, not the pixels."""
    a = np.ascontiguousarray(x)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def plan_segments(layout: dict[str, Any] | None, width: int) -> list[dict[str, Any]]:
    """Each output of the flat (N, D) array (``OutputLayout.to_dict()``'s ``outputs``; one output of ``width``
    without a layout) with the stride of the values kept, so that a sample keeps at most :data:`MAX_VALUES`."""
    outputs = (layout or {}).get("outputs") or [{"index": 0, "shape": [width], "offset": 0, "size": width}]
    per = max(1, MAX_VALUES // len(outputs))
    return [{"index": int(s["index"]), "shape": [int(d) for d in s["shape"]], "offset": int(s["offset"]),
             "size": int(s["size"]), "stride": max(1, -(-int(s["size"]) // per))} for s in outputs]


def keep(flat: np.ndarray, segments: list[dict[str, Any]]) -> np.ndarray:
    """The values of ``flat`` (N, D) a golden keeps, per ``segments``, as float32 (N, kept)."""
    parts = [np.asarray(flat)[:, s["offset"]:s["offset"] + s["size"]:s["stride"]] for s in segments]
    return np.concatenate(parts, axis=1).astype(np.float32)


def kept_parts(segments: list[dict[str, Any]]) -> list[tuple[dict[str, Any], slice]]:
    """Each segment with its columns in a kept array (:func:`keep`)."""
    out, start = [], 0
    for s in segments:
        n = len(range(0, s["size"], s["stride"]))
        out.append((s, slice(start, start + n)))
        start += n
    return out


@dataclass
class Golden:
    """One golden: its key, what it was recorded with, the batch's description, and both sides' kept values."""

    key: dict[str, Any]
    recorded: dict[str, Any]  # versions (python, torch, timm, onnx, onnxruntime, ...), cpu, torch threads, weights identity
    inputs: dict[str, Any]  # seed, shape, dtype, sha256
    segments: list[dict[str, Any]]
    torch: np.ndarray  # (N, kept) float32
    onnx: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "key": self.key, "recorded": self.recorded, "inputs": self.inputs,
                "segments": self.segments, "torch": _encode(self.torch), "onnx": _encode(self.onnx)}


def _encode(a: np.ndarray) -> dict[str, Any]:
    a = np.ascontiguousarray(a, dtype="<f4")
    return {"shape": list(a.shape), "dtype": "float32", "data": base64.b64encode(a.tobytes()).decode("ascii")}


def _decode(d: Any, name: str) -> np.ndarray:
    if not isinstance(d, dict) or d.get("dtype") != "float32" or not isinstance(d.get("data"), str):
        raise ValueError(f"its {name!r} array is not a float32 array")
    raw = base64.b64decode(d["data"].encode("ascii"), validate=True)
    shape = tuple(int(n) for n in d.get("shape", ()))
    if len(shape) != 2 or len(raw) != 4 * shape[0] * shape[1]:
        raise ValueError(f"its {name!r} array holds {len(raw)} bytes, not the shape {list(shape)} it names")
    return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)


def write_golden(path: Path, golden: Golden) -> None:
    """Write ``golden`` to ``path`` atomically (its folder made when missing); GoldenError naming the path."""
    text = json.dumps(jsonable(golden.to_dict()), indent=1, sort_keys=True) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)
    except OSError as exc:
        raise GoldenError(f"cannot write the golden {path}: {exc.strerror or exc}. Give --onnx-parity-golden a "
                          "folder this process can write (golden=DIR)") from None


def read_golden(path: Path) -> Golden:
    """The golden in ``path``; a file that cannot be read is a GoldenError naming it and the fix."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict):
            raise ValueError("it is not a JSON object")
        if doc.get("format") != FORMAT:
            raise ValueError(f"its format is {doc.get('format')!r}, this plugin reads format {FORMAT}")
        for name, kind in (("key", dict), ("recorded", dict), ("inputs", dict), ("segments", list)):
            if not isinstance(doc.get(name), kind):
                raise ValueError(f"it has no {name!r} {kind.__name__}")
        golden = Golden(key=doc["key"], recorded=doc["recorded"], inputs=doc["inputs"], segments=doc["segments"],
                        torch=_decode(doc.get("torch"), "torch"), onnx=_decode(doc.get("onnx"), "onnx"))
        width = sum(len(range(0, int(s["size"]), int(s["stride"]))) for s in golden.segments)
        if golden.torch.shape != golden.onnx.shape or golden.torch.shape[1] != width:
            raise ValueError(f"its arrays ({list(golden.torch.shape)}, {list(golden.onnx.shape)}) do not match its "
                             f"segments ({width} values a sample)")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise GoldenError(f"golden file {path} cannot be read ({why}). Restore it from version control, or "
                          f"record it afresh: delete it, or rerun with {UPDATE}") from None
    return golden
