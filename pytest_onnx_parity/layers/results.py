"""The results of a per-layer comparison, and how they read: one line, a table, JSON.

:class:`LayerComparison` holds the compared layers in execution order
(:class:`LayerResult`) and the modules not compared, each with its reason
(:class:`Uncompared`). Nothing here imports torch, onnx or numpy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..tolerances import LAYER_GROWTH

__all__ = ["DEFAULT_MEMORY_BUDGET", "LayerComparison", "LayerResult", "Uncompared", "failure_message"]

#: Bytes of intermediate tensors (torch and ONNX Runtime copies together) held at once.
DEFAULT_MEMORY_BUDGET = 1 << 30


@dataclass(frozen=True)
class LayerResult:
    """One compared module: its torch output against the ONNX value computing it."""

    name: str
    """Torch module path, e.g. ``blocks.7.mlp.fc1``."""
    module_type: str
    """Class name of the module, e.g. ``Linear``."""
    onnx_ops: tuple[str, ...]
    """ONNX op types of the nodes in the module's scope (and of modules fused into it)."""
    onnx_value: str
    """Name of the ONNX value compared."""
    shape: tuple[int, ...]
    max_abs_diff: float
    max_rel_diff: float
    """``max_abs_diff`` divided by the rms of the torch activation."""
    cosine: float
    """Cosine similarity of the two activations, flattened."""
    rms: float
    """Root mean square of the torch activation: the layer's scale."""
    tolerance: float
    """``atol + rms * max(rtol, growth * upstream_rel)``: the most ``max_abs_diff`` may be."""
    passed: bool
    aliases: tuple[str, ...] = ()
    """Other modules whose output is this very value (outer containers, usually)."""
    fused: tuple[str, ...] = ()
    """Modules the exporter fused into this one's ONNX op (a conv into its norm)."""
    upstream_rel: float = 0.0
    """The relative error this layer received: the largest ``max_rel_diff`` of the layers feeding it."""
    own_diff: float | None = None
    """Its own error: max abs difference between torch's output and the module's ONNX computation run on
    torch's own values at its inputs (teacher forcing, :mod:`.teacher`); ``None`` when not measured."""
    own_tolerance: float = math.nan
    """``atol + rtol * rms``: the most ``own_excess`` may be (nothing is inherited, so no growth)."""
    own_excess: float | None = None
    """What the tolerance judges: ``max(|torch - onnx| - elem_rtol * |torch|)`` of the own computation
    (``own_diff`` itself when ``elem_rtol`` is 0, as for float32)."""
    own_nodes: tuple[str, ...] = ()
    """The ONNX nodes of its own computation (between its value and the values of the modules it reads)."""

    @property
    def own_rel(self) -> float | None:
        """``own_diff`` divided by the rms of the torch activation."""
        if self.own_diff is None:
            return None
        return self.own_diff / self.rms if self.rms > 0 else (0.0 if self.own_diff == 0 else math.inf)

    @property
    def ratio(self) -> float:
        """What decides: ``own_diff / own_tolerance`` when the own error was measured, else
        ``max_abs_diff / tolerance`` (the growth rule); above 1 the layer fails."""
        if self.own_diff is not None:
            return _ratio(self.own_diff if self.own_excess is None else self.own_excess, self.own_tolerance)
        return _ratio(self.max_abs_diff, self.tolerance)

    def message(self) -> str:
        """``blocks.7.mlp.fc1 (Linear): own error 0.31, 4e5x its tolerance (max abs diff 0.35 with what it
        inherited)``; without an own error: ``...: max abs diff 0.31, 4e5x its tolerance``."""
        if self.own_diff is not None:
            text = (f"{self.name} ({self.module_type}): own error {_fmt_num(self.own_diff)}, "
                    f"{_fmt_ratio(self.ratio)}x its tolerance")
        else:
            text = (f"{self.name} ({self.module_type}): max abs diff {_fmt_num(self.max_abs_diff)}, "
                    f"{_fmt_ratio(self.ratio)}x its tolerance")
        notes = []
        if self.own_diff is not None:
            notes.append(f"max abs diff {_fmt_num(self.max_abs_diff)} with what it inherited")
        if self.fused:
            notes.append("includes " + ", ".join(self.fused) + ", fused by the exporter")
        if self.aliases:
            notes.append("also the output of " + ", ".join(self.aliases))
        return text + (f" ({'; '.join(notes)})" if notes else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module_type": self.module_type,
            "onnx_ops": list(self.onnx_ops),
            "onnx_value": self.onnx_value,
            "shape": list(self.shape),
            "max_abs_diff": _json_float(self.max_abs_diff),
            "max_rel_diff": _json_float(self.max_rel_diff),
            "cosine": _json_float(self.cosine),
            "rms": _json_float(self.rms),
            "tolerance": _json_float(self.tolerance),
            "upstream_rel": _json_float(self.upstream_rel),
            "own_diff": None if self.own_diff is None else _json_float(self.own_diff),
            "own_rel": None if self.own_rel is None else _json_float(self.own_rel),
            "own_tolerance": _json_float(self.own_tolerance),
            "own_excess": None if self.own_excess is None else _json_float(self.own_excess),
            "passed": self.passed,
            "aliases": list(self.aliases),
            "fused": list(self.fused),
        }


@dataclass(frozen=True)
class Uncompared:
    """A module that could not be compared, and why."""

    name: str
    module_type: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "module_type": self.module_type, "reason": self.reason}


@dataclass
class LayerComparison:
    """Per-layer comparison of a torch model and an ONNX file on one input."""

    layers: list[LayerResult]
    """Compared modules, in execution order (the order in which they return)."""
    uncompared: list[Uncompared]
    """Modules that could not be compared, each with the reason."""
    atol: float
    rtol: float
    exporter: str
    elem_rtol: float = 0.0
    """The share of each element's own magnitude its own error may add (float16 files)."""
    """Which scope information the file carried: ``dynamo``, ``torchscript`` or ``unknown``."""
    growth: float = LAYER_GROWTH
    """How many times the relative error it received a layer may carry."""
    onnx_runs: int = 1
    """End-to-end ``InferenceSession.run`` calls made (one per chunk)."""
    forced_runs: int = 0
    """Teacher-forced runs made (one per chunk; :attr:`LayerResult.own_diff`)."""
    torch_forwards: int = 1
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    peak_tensor_bytes: int = 0
    """Largest total of intermediate copies (both sides) held at once."""
    input_shape: tuple[int, ...] = ()
    note: str = ""
    """Why nothing could be compared, when :attr:`layers` is empty."""
    own_note: str = ""
    """Why some layers have no own error (``own_diff`` None), when some have none."""

    @property
    def first_divergence(self) -> LayerResult | None:
        """The first layer, in execution order, that fails; ``None`` when all pass."""
        return next((layer for layer in self.layers if not layer.passed), None)

    @property
    def passed(self) -> bool:
        return self.first_divergence is None

    @property
    def failed(self) -> list[LayerResult]:
        return [layer for layer in self.layers if not layer.passed]

    def message(self) -> str:
        """One line: ``first divergence at NAME (Type): max abs diff X, Nx its tolerance``."""
        first = self.first_divergence
        if first is not None:
            return f"first divergence at {first.message()}"
        if not self.layers:
            return "no layer could be compared" + (f": {self.note}" if self.note else "")
        return f"no divergence across {len(self.layers)} compared layers"

    def summary(self) -> str:
        """Same as :meth:`message`."""
        return self.message()

    def table(self, *, only_failing: bool = False, max_rows: int | None = None) -> str:
        """A text table of the layers; ``max_rows`` keeps the rows around the first divergence."""
        rows = [(i, layer) for i, layer in enumerate(self.layers) if layer.passed is False or not only_failing]
        if max_rows is not None and len(rows) > max_rows:
            first = self.first_divergence
            at = next((k for k, (_, layer) in enumerate(rows) if layer is first), 0)
            start = max(0, min(at - max_rows // 4, len(rows) - max_rows))
            rows = rows[start : start + max_rows]
        head = ("#", "layer", "type", "onnx ops", "own diff", "own (x rms)", "max abs diff", "rel (x rms)", "upstream",
                "tolerance", "x tol", "cosine", "")
        body = []
        for i, layer in rows:
            name = layer.name + (f" (+{len(layer.aliases)} alias)" if len(layer.aliases) == 1 else "")
            if len(layer.aliases) > 1:
                name += f" (+{len(layer.aliases)} aliases)"
            if layer.fused:
                name += " [fused: " + ", ".join(_tail(f, layer.name) for f in layer.fused) + "]"
            body.append(
                (
                    str(i),
                    name,
                    layer.module_type,
                    _fmt_ops(layer.onnx_ops),
                    "-" if layer.own_diff is None else f"{layer.own_diff:.3g}",
                    "-" if layer.own_rel is None else f"{layer.own_rel:.2g}",
                    f"{layer.max_abs_diff:.3g}",
                    f"{layer.max_rel_diff:.2g}",
                    f"{layer.upstream_rel:.2g}",
                    f"{layer.own_tolerance if layer.own_diff is not None else layer.tolerance:.2g}",
                    _fmt_ratio(layer.ratio),
                    _fmt_cos(layer.cosine),
                    "ok" if layer.passed else "FAIL",
                )
            )
        widths = [max(len(r[c]) for r in [head, *body]) for c in range(len(head))]
        numeric = {0, 4, 5, 6, 7, 8, 9, 10, 11}
        lines = []
        for r in [head, *body]:
            cells = [r[c].rjust(widths[c]) if c in numeric else r[c].ljust(widths[c]) for c in range(len(head))]
            lines.append("  ".join(cells).rstrip())
        lines.insert(1, "-" * len(lines[0]))
        shown = len(rows)
        if shown < len(self.layers) and not only_failing:
            lines.append(f"... {len(self.layers) - shown} more layers (LayerComparison.table() shows all)")
        lines.append(
            f"{len(self.layers)} layers compared, {len(self.failed)} diverge; {len(self.uncompared)} modules not "
            f"compared; each layer is judged on its own error (its ONNX nodes on torch's values at its inputs): at "
            f"most atol + rtol * rms(torch activation), atol={self.atol:g}, rtol={self.rtol:g}"
            + (f", each element also {self.elem_rtol:g} x its own magnitude" if self.elem_rtol else "")
            + "; 'max abs diff' "
            "includes what it inherited" + (f". {self.own_note}: without an own error (-) a layer is judged by the "
                                             f"growth rule, atol + rms * max(rtol, growth * upstream), growth="
                                             f"{self.growth:g}" if self.own_note else "")
        )
        return "\n".join(lines)

    def uncompared_table(self) -> str:
        """The modules not compared and why, one a line."""
        if not self.uncompared:
            return "every module was compared"
        width = max(len(u.name) for u in self.uncompared)
        return "\n".join(f"{u.name.ljust(width)}  {u.module_type}: {u.reason}" for u in self.uncompared)

    def to_dict(self) -> dict[str, Any]:
        first = self.first_divergence
        return {
            "passed": self.passed,
            "first_divergence": first.name if first else None,
            "message": self.message(),
            "exporter": self.exporter,
            "atol": self.atol,
            "rtol": self.rtol,
            "elem_rtol": self.elem_rtol,
            "growth": self.growth,
            "onnx_runs": self.onnx_runs,
            "forced_runs": self.forced_runs,
            "torch_forwards": self.torch_forwards,
            "memory_budget": self.memory_budget,
            "peak_tensor_bytes": self.peak_tensor_bytes,
            "input_shape": list(self.input_shape),
            "note": self.note,
            "own_note": self.own_note,
            "layers": [layer.to_dict() for layer in self.layers],
            "uncompared": [u.to_dict() for u in self.uncompared],
        }

    def __str__(self) -> str:
        return self.message() + "\n" + self.table()


def failure_message(comparison: LayerComparison, *, max_rows: int = 8) -> str:
    """The message of a failed per-layer check: the one line, a short table, the knob."""
    lines = [comparison.message(), ""]
    failing = comparison.failed
    lines.append(comparison.table(max_rows=max_rows))
    lines.append("")
    lines.append(
        f"{len(failing)} of {len(comparison.layers)} layers diverge. Pass atol= and rtol= "
        "(together), or growth=, to compare_layers/assert_layers_close to change the per-layer tolerance."
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- formatting


def _ratio(diff: float, tolerance: float) -> float:
    if tolerance > 0:
        return diff / tolerance
    return 0.0 if diff == 0 else math.inf


def _fmt_num(x: float) -> str:
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return f"{x:.2g}"


def _fmt_ratio(r: float) -> str:
    if math.isnan(r) or math.isinf(r):
        return "inf"
    if r < 10:
        return f"{r:.1f}".rstrip("0").rstrip(".") if r >= 0.1 else f"{r:.1g}" if r > 0 else "0"
    if r < 1000:
        return f"{r:.0f}"
    mantissa, exponent = f"{r:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _fmt_cos(c: float) -> str:
    if math.isnan(c):
        return "nan"
    if c >= 0.9999995:  # what six decimals would show as 1.000000
        return "1"
    return f"{c:.6f}"


def _fmt_ops(ops: tuple[str, ...], limit: int = 28) -> str:
    text = ",".join(ops)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _tail(name: str, relative_to: str) -> str:
    parent = relative_to.rsplit(".", 1)[0] + "." if "." in relative_to else ""
    tail = name[len(parent) :] if parent and name.startswith(parent) else name
    return name if tail.isdigit() else tail


def _json_float(x: float) -> float | str:
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return x
