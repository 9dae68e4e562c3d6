"""The statistics of each layer and its verdict: its own error first, the growth rule without one.

A layer whose own error was measured (teacher forcing, :mod:`.teacher`: its ONNX nodes on torch's
values at its inputs) is judged on it alone: ``own_diff <= atol + rtol * rms(torch activation)``, each
element also allowed ``elem_rtol`` of its own magnitude (float16: rounding scales with the value), i.e.
``own_excess = max(|torch - onnx| - elem_rtol * |torch|) <= atol + rtol * rms``.
Nothing is inherited, so nothing grows: a module that only passes on an error it received is never
named, and in float16, where inherited rounding swamps a 5% fault, the fault's own error still shows.

Without an own error (the forced run could not be made) a layer is judged against its own activation
scale and against the error it received: ``max|torch - onnx| <= atol + rms(torch activation) * max(rtol,
growth * upstream_rel)``, where ``upstream_rel`` is the largest ``max_rel_diff`` of the layers feeding it
(followed through the torch dataflow) and ``max_rel_diff`` is ``max_abs_diff / rms``: a layer only fails
when its error is large in its own scale *and* much larger than what it was given. The defaults
(:data:`~pytest_onnx_parity.tolerances.LAYER_ATOL`, ``LAYER_RTOL``, ``LAYER_GROWTH``, and the per-precision
profiles) are chosen from measured clean-export errors and planted faults (docs/layers.md).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .results import LayerResult

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from .tracer import Entry

__all__ = ["MIN_COVERAGE", "coverage", "coverage_problem", "judge", "max_abs_diff", "measure"]

_BLOCK = 1 << 20  # elements per float64 block of the fallback sums


def measure(entry: "Entry", expected: "np.ndarray", actual: "np.ndarray") -> LayerResult:
    """The statistics of one layer (torch output ``expected``, ONNX value ``actual``).

    Its tolerance is NaN and it does not pass until :func:`judge` sets both.
    """
    import numpy as np

    e = expected.reshape(-1)
    a = actual.astype(np.float32, copy=False).reshape(-1)
    if e.size == 0:
        max_abs, rms, cosine = 0.0, 0.0, 1.0
    else:
        max_abs = max_abs_diff(e, a)
        ee, aa, ea = float(np.dot(e, e)), float(np.dot(a, a)), float(np.dot(e, a))  # BLAS, float32
        if not all(map(math.isfinite, (ee, aa, ea))) or ee > 1e30 or aa > 1e30:
            ee = aa = ea = 0.0
            for k in range(0, e.size, _BLOCK):  # float64, finite values only, in blocks to bound memory
                e64 = e[k : k + _BLOCK].astype(np.float64)
                a64 = a[k : k + _BLOCK].astype(np.float64)
                e64[~np.isfinite(e64)] = 0.0
                a64[~np.isfinite(a64)] = 0.0
                ee, aa, ea = ee + float(e64 @ e64), aa + float(a64 @ a64), ea + float(e64 @ a64)
        rms = math.sqrt(ee / e.size)
        cosine = ea / math.sqrt(ee * aa) if ee > 0 and aa > 0 else (1.0 if ee == aa else 0.0)
        cosine = min(1.0, max(-1.0, cosine))
    max_rel = max_abs / rms if rms > 0 else (0.0 if max_abs == 0 else math.inf)
    return LayerResult(
        name=entry.name,
        module_type=entry.module_type,
        onnx_ops=entry.ops,
        onnx_value=entry.value,
        shape=tuple(expected.shape),
        max_abs_diff=max_abs,
        max_rel_diff=max_rel,
        cosine=cosine,
        rms=rms,
        tolerance=math.nan,
        passed=False,
        aliases=tuple(entry.aliases),
        fused=tuple(entry.fused),
    )


def max_abs_diff(expected: "np.ndarray", actual: "np.ndarray", elem_rtol: float = 0.0) -> float:
    """``max |expected - actual|`` over flat float arrays; NaN against NaN and an Inf against the same Inf
    count as equal, NaN against a number as an infinite difference (never silently equal). With
    ``elem_rtol``: ``max(|expected - actual| - elem_rtol * |expected|)``, what is left once each element
    has the room of its own magnitude."""
    import numpy as np

    e = expected.reshape(-1)
    a = actual.astype(np.float32, copy=False).reshape(-1)
    if e.size == 0:
        return 0.0
    diff = np.subtract(e, a)
    np.abs(diff, out=diff)
    if elem_rtol:
        diff -= np.float32(elem_rtol) * np.abs(e)
    worst = float(diff.max())  # NaN when any difference is NaN
    if math.isnan(worst):
        bad = np.isnan(diff)
        same = (np.isnan(e) & np.isnan(a)) | (e == a)  # NaN against NaN, inf against the same inf
        diff[bad & same] = 0.0
        diff[bad & ~same] = np.inf
        worst = float(diff.max())
    return worst


def judge(
    layers: list[LayerResult],
    order: Sequence[str],
    sources: Mapping[str, tuple[list[str], bool]],
    atol: float,
    rtol: float,
    growth: float,
) -> list[LayerResult]:
    """Tolerance and verdict of each layer, from its own scale and the error it received.

    ``tolerance = atol + rms * max(rtol, growth * upstream_rel)``: float32 rounding
    differences compound along the depth, so a layer may carry up to ``growth`` times
    the relative error of the layers that feed it. ``upstream_rel`` follows the torch
    dataflow (which module produced each input tensor); an input made outside any
    module (a functional op in a ``forward``, or changed in place by one) counts the
    largest error of the layers that finished before it; a container also counts the
    layers inside it.

    ``layers`` are in execution order; ``order`` is every module called, in the order
    they returned; ``sources`` maps a module to the modules that made its inputs and
    whether an input came from elsewhere (:attr:`.tracer.Tracer.sources`).
    """
    import dataclasses

    row_of: dict[str, LayerResult] = {}
    for layer in layers:
        for name in (layer.name, *layer.aliases, *layer.fused):
            row_of.setdefault(name, layer)
    position = {name: i for i, name in enumerate(order)}
    rel: dict[str, float] = {layer.name: layer.max_rel_diff for layer in layers}

    def before(name: str, own: LayerResult) -> float:
        at = position.get(name, len(position))
        return max(
            (
                rel[layer.name]
                for layer in layers
                if position.get(layer.name, 0) < at and layer is not own and not layer.name.startswith(name + ".")
            ),
            default=0.0,
        )

    def received(name: str, own: LayerResult, seen: set[str]) -> float:
        if name in seen:
            return 0.0
        seen.add(name)
        producers, unknown = sources.get(name, ([], True))
        values = []
        for producer in producers:
            row = row_of.get(producer)
            if row is not None and row is not own and not row.name.startswith(name + "."):
                values.append(rel[row.name])
            else:  # passes its input on: an identity, a fusion partner of this row, a module not compared
                values.append(received(producer, own, seen))
        if unknown:
            values.append(before(name, own))
        return max(values, default=0.0)

    out = []
    for layer in layers:
        upstream = received(layer.name, layer, set())
        inner = [rel[d.name] for d in layers if d.name.startswith(layer.name + ".")]  # a container's own parts
        upstream = max([upstream, *inner])
        allowed = max(rtol, growth * upstream) if math.isfinite(upstream) else math.inf
        tolerance = atol + allowed * layer.rms
        own_tolerance = atol + rtol * layer.rms
        rel[layer.name] = layer.max_rel_diff
        passed = layer.max_abs_diff <= tolerance if layer.own_diff is None else layer.own_excess <= own_tolerance
        out.append(
            dataclasses.replace(
                layer, upstream_rel=upstream, tolerance=tolerance, own_tolerance=own_tolerance, passed=bool(passed)
            )
        )
    return out


#: Least share of the model's computing modules that the per-layer check must compare before
#: its "no divergence" counts as evidence (see :func:`coverage`). The plugin's own exports of
#: resnet18, vit_tiny, convnext_atto and efficientnet_b0 (both exporters) compare all of them;
#: a file stripped of node names and scope metadata compares none.
MIN_COVERAGE = 0.5

#: Reasons for not comparing a module that take nothing away from the evidence: the module
#: computes nothing in eval mode, never runs, or its output is compared through its partner.
_NEUTRAL = ("identity in eval mode", "not called in the forward", "fused with ", "the exporter folded ")


def coverage(compared: int, uncompared: Sequence[Any]) -> tuple[int, int]:
    """``(compared, comparable)``: modules compared, and modules that compute something of their own."""
    lost = sum(1 for u in uncompared if not str(getattr(u, "reason", "")).startswith(_NEUTRAL))
    return compared, compared + lost


def coverage_problem(compared: int, uncompared: Sequence[Any], note: str = "") -> str | None:
    """Why a per-layer comparison is too thin to pass (None when it is not).

    A file stripped of its node names and scope metadata matches no module, and
    "no divergence among 0 layers" proves nothing.
    """
    done, total = coverage(compared, uncompared)
    share = done / total if total else 0.0
    if done and share >= MIN_COVERAGE:
        return None
    why = f": {note}" if note else ""
    return (f"only {done} of {total} computing modules could be compared ({share:.0%}, at least {MIN_COVERAGE:.0%} "
            f"needed){why}. Export with pytest_onnx_parity.export_onnx, or keep the exporter's node names and "
            "scope metadata (pkg.torch.onnx.name_scopes) in the file.")
