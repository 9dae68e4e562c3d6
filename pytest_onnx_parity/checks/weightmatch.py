"""Does the ONNX file hold the weights of the model under test?

When a team's file was exported from other weights (another checkpoint, a model
built with random weights instead of ``NAME=pretrained``), every other check reports
huge logit differences, and loosening tolerances would be the wrong advice.
:func:`compare_weights` compares the file's float tensors (initializers and
``Constant`` nodes) with the model's parameters and BatchNorm statistics first.

How it matches. Exporters rename weights (TorchScript: ``onnx::Conv_123``) and
change their form, legitimately. The torch side therefore offers, for each weight,
the forms an exporter may write (:mod:`.weightforms`): the tensor itself (in any
shape with the same number of elements: reshaped layer scales, squeezed tokens), its
transpose (a Linear exported as ``MatMul`` with W^T), the 1x1 kernel as a transposed
matrix, the weight a module computes at run time (a standardised kernel, a fused qkv
bias), and a convolution folded with the BatchNorm that normalises its output
(``w*gamma/sqrt(var+eps)`` and ``(b-mean)*gamma/sqrt(var+eps)+beta``), paired by
one traced forward pass. File tensors
are indexed by element count; within a bucket a 16-element signature prefilters
the pairs before the full ``allclose``, so matching is close to linear in the
number of weights. A weight that matched nothing is then *located*: the
initializer with its name (the dynamo exporter keeps module paths), else the
same-sized input of the nodes of its module's ONNX scope (TorchScript node
names, dynamo scope metadata), else the slot of its folded convolution. A located
weight that differs is reported with its difference.

Verdict: ``failed`` when a located weight differs, or when the file is another model's
("this file does not hold NAME's weights": its Conv/Gemm/MatMul nodes compute with float
weights of its own, not one non-constant weight of the model equals a file tensor, and what
was located by name or scope covers less than half of the model); ``passed`` when nothing
differs and at least :data:`MIN_EVIDENCE` of the weight elements matched a file tensor;
``skipped`` (with the reason) when the file has no float weights (quantized, stripped) or too
little could be compared. Never ``passed`` without evidence.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import OnnxParityError
from ..tolerances import MIN_WEIGHT_EVIDENCE as MIN_EVIDENCE
from ..tolerances import WEIGHT_TOLERANCES as DEFAULT_TOLERANCES
from .weightfile import close, dtype_name, file_tensors, near, provenance_model, weight_kernels
from .weightforms import Form, trace_weights, tracked_weights, weight_forms

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import onnx
    import torch

    from ..model.record import LoadedModel

SIGNATURE = 16
FIX_OTHER = ("Looser tolerances would not help: the logits differ because the weights do. Test the model whose "
             "weights the file holds (NAME=pretrained, or NAME=/path/to/checkpoint in the model spec), or "
             "re-export the file from the model under test.")
FIX_SOME = ("Looser tolerances would not help: these layers differ in the file itself. The file was edited, or "
            "exported from a modified model: re-export it from the model under test, or test the checkpoint "
            "it was exported from (NAME=/path/to/checkpoint in the model spec).")


def _scope_tools() -> tuple[Any, Any]:
    """The per-layer module's ONNX scope mapping (one import site)."""
    from ..layers.scopes import GraphScopes, detect_exporter

    return GraphScopes, detect_exporter


class WeightsCheckError(OnnxParityError):
    """The weights check cannot run on what it was given."""


@dataclass
class WeightsComparison:
    """The outcome of :func:`compare_weights`."""

    status: str  # passed | failed | skipped
    message: str
    total: int = 0
    matched: int = 0
    compared: int = 0
    differing: list[tuple[str, float, float]] = field(default_factory=list)
    """(weight name, greatest absolute difference, that difference relative to the weight's largest |value|)."""
    located: dict[str, str] = field(default_factory=dict)
    """Differing weight -> the file tensor that takes its place."""
    unlocated: list[str] = field(default_factory=list)
    total_elements: int = 0
    matched_elements: int = 0
    differing_elements: int = 0
    exporter: str = "unknown"
    file_tensors: int = 0
    rtol: float = 0.0
    atol: float = 0.0
    pairing: str = ""
    """How BatchNorms were paired with convolutions: ``traced`` (one forward) or ``module order`` (its fallback)."""
    model_name: str = ""
    """The timm name of the model under test (the NAME of "this file does not hold NAME's weights")."""
    informative_matched: int = 0
    """Matched weights that are not constant-valued: a tensor of ones or zeros equals a file tensor by
    coincidence and is no evidence that the file holds this model."""
    file_elements: int = 0
    """Values in the file's float tensors."""
    file_kernels: int = 0
    """File tensors that a Conv, Gemm or MatMul of the file takes as its weight: the file's own float weights."""
    other_model: bool = False
    """True when the file holds float weights of its own and none of the model's: it is not this model."""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def fraction_differing(self) -> float:
        compared = self.matched_elements + self.differing_elements
        return self.differing_elements / compared if compared else float("nan")

    @property
    def coverage(self) -> float:
        """Fraction of weight elements that matched a file tensor."""
        return self.matched_elements / self.total_elements if self.total_elements else float("nan")

    def to_dict(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {
            "status": self.status, "message": self.message, "total": self.total, "matched": self.matched,
            "compared": self.compared, "unlocated": list(self.unlocated),
            "differing": [{"name": n, "max_abs_diff": num(a), "rel_diff": num(r), "file_tensor": self.located.get(n)}
                          for n, a, r in self.differing],
            "fraction_differing": num(self.fraction_differing), "coverage": num(self.coverage),
            "total_elements": self.total_elements, "matched_elements": self.matched_elements,
            "differing_elements": self.differing_elements, "exporter": self.exporter,
            "file_tensors": self.file_tensors, "rtol": self.rtol, "atol": self.atol, "pairing": self.pairing,
            "model_name": self.model_name, "informative_matched": self.informative_matched,
            "file_elements": self.file_elements, "file_kernels": self.file_kernels, "other_model": self.other_model,
        }


# --------------------------------------------------------------------------- file side


def _match(forms: list[Form], files: dict[str, "np.ndarray"], rtol: float, atol: float) -> tuple[dict[str, str], set[str]]:
    """Weight name -> the file tensor one of its forms equals; and the file tensors matched."""
    import numpy as np

    buckets: dict[int, list[str]] = {}
    for name, arr in files.items():
        buckets.setdefault(int(arr.size), []).append(name)
    by_size: dict[int, list[Form]] = {}
    for f in forms:
        if f.numel in buckets:
            by_size.setdefault(f.numel, []).append(f)
    matched: dict[str, str] = {}
    used: set[str] = set()
    for n, cands in by_size.items():
        names = buckets[n]
        s = min(n, SIGNATURE)
        idx = np.unique(np.arange(s, dtype=np.int64) * (n - 1) // max(s - 1, 1))
        sig_f = np.stack([files[k].reshape(-1)[idx].astype(np.float64) for k in names])  # (m, s)
        sig_t = np.stack([f.at(idx).astype(np.float64) for f in cands])  # (k, s)
        ok = np.all(near(sig_t[:, None, :], sig_f[None, :, :], rtol, atol), axis=-1)
        for i, j in zip(*np.nonzero(ok)):
            form, fname = cands[i], names[j]
            if all(c in matched for c in form.covers) and fname in used:
                continue
            if close(form.flat(), files[fname].reshape(-1), rtol, atol):
                used.add(fname)
                for c in form.covers:
                    matched.setdefault(c, fname)
    return matched, used


# --------------------------------------------------------------------------- locating


def _slots(proto: "onnx.ModelProto", files: dict[str, "np.ndarray"], model: "torch.nn.Module") -> tuple[dict[str, list[str]], str]:
    """Module path -> the file tensors its own ONNX nodes (not its children's) consume, in (node, input) order."""
    graph_scopes, detect = _scope_tools()
    exporter = detect(list(proto.graph.node))
    if exporter == "unknown":
        return {}, exporter
    scopes = graph_scopes(proto, dict(model.named_modules()))
    nodes = proto.graph.node
    owner: dict[int, str] = {}  # each node belongs to its innermost scope (the one with the fewest nodes)
    for path, idx in sorted(scopes.nodes_of.items(), key=lambda kv: (-len(kv[1]), len(kv[0]))):
        for i in idx:
            owner[i] = path
    out: dict[str, list[str]] = {}
    for i in sorted(owner):
        slots = out.setdefault(owner[i], [])
        for v in nodes[i].input:
            if v in files and v not in slots:
                slots.append(v)
    return out, exporter


def _locate(tracked: dict[str, "np.ndarray"], matched: dict[str, str], used: set[str], files: dict[str, "np.ndarray"],
            slots: dict[str, list[str]], pairs: dict[str, str], modules: set[str]) -> dict[str, str]:
    """Unmatched weight -> the file tensor that takes its place, where one can be found."""
    located: dict[str, str] = {}
    taken = set(used)
    for name in tracked:  # 1. the dynamo exporter keeps module paths as initializer names
        if name not in matched and name in files and name not in taken:
            located[name] = name
            taken.add(name)
    by_module: dict[str, list[str]] = {}
    for name in tracked:
        mod = name.rsplit(".", 1)[0] if "." in name else ""
        by_module.setdefault(mod if mod in modules else "", []).append(name)
    conv_of_bn = pairs
    for mod, names in by_module.items():  # 2. same-sized inputs of the module's own nodes, in order
        free = [s for s in slots.get(mod, []) if s not in taken]
        for name in names:
            if name in matched or name in located:
                continue
            n = tracked[name].size
            hit = next((s for s in free if files[s].size == n), None)
            if hit is not None:
                located[name] = hit
                taken.add(hit)
                free.remove(hit)
    for bn, conv in conv_of_bn.items():  # 3. a folded BatchNorm lives in its convolution's slots
        w_slot = located.get(f"{conv}.weight") or matched.get(f"{conv}.weight")
        if w_slot is None:
            continue
        conv_slots = slots.get(conv, [])
        after = conv_slots[conv_slots.index(w_slot) + 1:] if w_slot in conv_slots else []
        n = tracked.get(f"{bn}.running_var", tracked.get(f"{bn}.weight"))
        b_slot = f"{w_slot}_bias" if f"{w_slot}_bias" in files else next(
            (s for s in after if n is not None and files[s].size == n.size), None)
        for suffix, slot in (("weight", w_slot), ("running_var", w_slot), ("bias", b_slot), ("running_mean", b_slot)):
            name = f"{bn}.{suffix}"
            if name in tracked and name not in matched and name not in located and slot is not None:
                located[name] = slot
    return located


def _difference(name: str, target: "np.ndarray", forms: list[Form]) -> tuple[float, float] | None:
    """(max abs diff, relative) between the file tensor and the closest same-sized form covering ``name``."""
    import numpy as np

    best: tuple[float, float] | None = None
    t = target.reshape(-1).astype(np.float64)
    for f in forms:
        if name in f.covers and f.numel == t.size:
            expected = f.flat().astype(np.float64)
            d = float(np.abs(expected - t).max())
            scale = float(np.abs(expected).max())
            if best is None or d < best[0]:
                best = (d, d / scale if scale > 0 else float("inf"))
    return best


# --------------------------------------------------------------------------- public


def compare_weights(
    model: "torch.nn.Module | LoadedModel | str",
    onnx_file: "str | os.PathLike[str] | onnx.ModelProto",
    *,
    rtol: float | None = None,
    atol: float | None = None,
) -> WeightsComparison:
    """Compare an ONNX file's float tensors with ``model``'s weights (see the module doc).

    ``rtol`` and ``atol`` are given together or not at all; by default they follow the
    dtype of the file's weights (:data:`DEFAULT_TOLERANCES`).
    """
    import torch

    from ..onnxfile.io import load_onnx_proto

    if (rtol is None) != (atol is None):
        raise WeightsCheckError(f"give rtol and atol together or not at all (got rtol={rtol}, atol={atol})")
    from ..model.build import load_model_record, model_name
    from ..model.record import LoadedModel

    if isinstance(model, str):
        model = load_model_record(model)
    label = model_name(model) if isinstance(model, (LoadedModel, torch.nn.Module)) else ""
    model = model.module if isinstance(model, LoadedModel) else model
    if not isinstance(model, torch.nn.Module):
        raise WeightsCheckError(f"model must be a torch.nn.Module or a model spec string, got {type(model).__name__}")
    proto = load_onnx_proto(onnx_file, weights=True)
    files = file_tensors(proto)
    tracked = tracked_weights(model)
    total_el = sum(a.size for a in tracked.values())
    dtypes = sorted({dtype_name(a) for a in files.values()})
    dtype = "float16" if "float16" in dtypes else "bfloat16" if "bfloat16" in dtypes else "float32"
    if rtol is None or atol is None:
        rtol, atol = DEFAULT_TOLERANCES[dtype]
    base = dict(total=len(tracked), total_elements=total_el, file_tensors=len(files), rtol=rtol, atol=atol)
    if not tracked:
        return WeightsComparison("skipped", "the model has no float weights to compare", **base)
    if not files:
        return WeightsComparison(
            "skipped", "the ONNX file holds no floating-point weights (a quantized file?): weights not compared", **base)
    trace = trace_weights(model)
    pairs = trace.pairs
    forms = weight_forms(tracked, model, trace)
    matched, used = _match(forms, files, rtol, atol)
    modules = {n for n, _ in model.named_modules()}
    slots, exporter = _slots(proto, files, model)
    located = _locate(tracked, matched, used, files, slots, pairs, modules)
    differing = []
    for name in tracked:
        if name in located:
            diff = _difference(name, files[located[name]], forms)
            if diff is not None:
                differing.append((name, *diff))
    differing_names = {d[0] for d in differing}
    result = WeightsComparison(
        "passed", "", matched=len(matched), compared=len(matched) + len(differing),
        differing=differing, located={n: located[n] for n in differing_names},
        unlocated=[n for n in tracked if n not in matched and n not in differing_names],
        matched_elements=sum(tracked[n].size for n in matched),
        differing_elements=sum(tracked[n].size for n in differing_names), exporter=exporter,
        pairing=trace.pairing + (f" ({trace.reason})" if trace.reason else ""), model_name=label,
        informative_matched=sum(1 for n in matched if not _constant(tracked[n])),
        file_elements=sum(int(a.size) for a in files.values()), file_kernels=len(weight_kernels(proto, files)), **base)
    result.status, result.message = _verdict(result, dtype, provenance_model(proto))
    return result


def _constant(a: np.ndarray) -> bool:
    """All values equal (timm's all-ones norm scales, zero biases): such a match proves nothing."""
    flat = a.reshape(-1)
    return bool(flat.size == 0 or (flat == flat[0]).all())


def _verdict(r: WeightsComparison, dtype: str, file_model: str | None = None) -> tuple[str, str]:
    cover = (f"{r.compared} of {r.total} weights compared ({r.matched} equal, {len(r.differing)} differ, "
             f"{len(r.unlocated)} not found in the file); {_pct(r.coverage)} of weight elements matched "
             f"(tolerance {dtype}: rtol={r.rtol:g}, atol={r.atol:g})")
    compared_elements = r.matched_elements + r.differing_elements
    if (r.informative_matched == 0 and r.file_kernels > 0
            and compared_elements < MIN_EVIDENCE * r.total_elements):
        # not one (non-constant) weight of the model is in the file, and its structure does not fit either
        # (the weights found by name or scope cover less than half): the file computes with float weights
        # of another network
        r.other_model = True
        return "failed", _other_model_message(r, cover, file_model)
    if r.differing:
        other = r.coverage < MIN_EVIDENCE
        head = ("The ONNX file holds other weights than the model under test!"
                if other else "The ONNX file's weights differ from the model's in some layers!")
        first, a, rel = r.differing[0]
        lines = [head, f"Mismatched weights: {len(r.differing)} / {r.compared} compared "
                       f"({_pct(r.fraction_differing)} of compared elements).",
                 f"First differing weight: {first} (file tensor {r.located[first]!r}): greatest absolute difference "
                 f"{a:.3g} ({_pct(rel)} of its largest value).", "  weight" + " " * 34 + "max |diff|   relative"]
        for n, a, rel in r.differing[:8]:
            lines.append(f"  {n:<40} {a:<12.3g} {_pct(rel)}")
        if len(r.differing) > 8:
            lines.append(f"  ... and {len(r.differing) - 8} more")
        lines += [cover + ".", FIX_OTHER if other else FIX_SOME]
        return "failed", "\n".join(lines)
    if r.compared == 0:
        return "skipped", (f"no weight of the model could be found in the ONNX file ({r.file_tensors} float tensors, "
                           "none equal to a weight and none located by name or module scope; no Conv, Gemm or MatMul of "
                           "the file computes with float weights, as in a quantized file): not compared")
    if r.coverage < MIN_EVIDENCE:
        return "skipped", (f"too little evidence: {cover}; a pass needs {MIN_EVIDENCE:.0%}. "
                           "The exporter turned most weights into other forms this check does not model.")
    return "passed", f"the file holds the model's weights: {cover}"


def _other_model_message(r: WeightsComparison, cover: str, file_model: str | None) -> str:
    name = r.model_name or "the model"
    coincidence = r.matched - r.informative_matched
    also = (f" (not counting {coincidence} constant-valued {'weight' if coincidence == 1 else 'weights'}, all ones "
            "or all zeros, that equal a file tensor by coincidence)") if coincidence else ""
    located = (f"; the {len(r.differing)} found by name or module scope differ, and they hold "
               f"{_pct(r.differing_elements / r.total_elements)} of the model's weight values") if r.differing else ""
    names = f" Its metadata names the model {file_model!r}." if file_model and file_model != name else ""
    tensors = "tensor" if r.file_kernels == 1 else "tensors"
    diagnosis = (f"this file does not hold {name}'s weights: 0 of its {r.total} weights matched{also}{located}, while "
                 f"the file computes with {r.file_kernels} float weight {tensors} of its own ({r.file_tensors} float "
                 f"tensors, {_count(r.file_elements)} values in all). It was exported from another model.{names}")
    fix = (f"Check the file against the model it was exported from (--model THAT_NAME=/path/to/its/checkpoint), or "
           f"check the file exported from {name} with the checkpoint it was exported from ({name}=/path/to/checkpoint "
           f"or {name}=pretrained). Every other check fails with another model's file: no tolerance, stamp or data "
           "config fixes it.")
    return "\n".join([diagnosis, fix, cover + "."])


def _count(n: int) -> str:
    return f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.3g}k" if n >= 1e4 else str(n)


def _pct(x: float) -> str:
    if not math.isfinite(x):
        return "n/a"
    return f"{100 * x:.3g}%" if x < 0.999 else f"{math.floor(1000 * x) / 10:.1f}%"  # never rounds up to 100%
