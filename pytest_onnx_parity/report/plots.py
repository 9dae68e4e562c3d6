"""Pictures of a per-layer comparison (matplotlib, an optional extra).

``pip install "pytest-onnx-parity[plots]"`` brings matplotlib; without it
:func:`plot_layers` raises :class:`~pytest_onnx_parity.errors.OnnxParityError`
saying so. matplotlib is imported only when a plot is drawn.
"""
from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import OnnxParityError

if TYPE_CHECKING:  # pragma: no cover
    from ..layers import LayerComparison

__all__ = ["layer_figure", "layer_plot", "plot_file", "plot_layers"]

_INSTALL_HINT = 'pip install "pytest-onnx-parity[plots]"'


def plot_file(out_dir: str | os.PathLike[str], label: str) -> Path:
    """Where the per-layer plot of ``label`` goes: ``<out_dir>/<label as a file name>.png``.

    ``label`` is the item's name inside ``onnx-parity[...]`` (the spec and the values of the
    varying matrix axes), so each variant of a model has its own file. A name too long for a
    file keeps its start and gains a hash of the whole label, so two labels never share a file.
    """
    import hashlib

    from ..files import safe_name

    name = safe_name(label, limit=10_000)
    if len(name) > 120:
        name = f"{name[:100]}-{hashlib.sha256(label.encode()).hexdigest()[:12]}"
    return Path(out_dir) / f"{name}.png"


def layer_plot(result: Any, out_dir: str | os.PathLike[str], label: str) -> Path:
    """The gate's and ``onnx-parity check``'s plot of ``result``'s per-layer comparison: the file from
    :func:`plot_file`, the title naming ``label`` and the whole variant (exporter, opset, precision, ...)."""
    variant = getattr(result, "variant", None) or {}
    title = label + ("\n" + ", ".join(f"{k} {'default' if v is None else v}" for k, v in variant.items()) if variant else "")
    return plot_layers(result.layer_comparison, plot_file(out_dir, label), title=title)


def plot_layers(comparison: "LayerComparison", path: "str | os.PathLike[str]", title: str | None = None) -> Path:
    """Write a PNG of each layer's own error against its tolerance, along the depth (:func:`layer_figure`).
    Returns the path written."""
    path = Path(path)
    fig = layer_figure(comparison, title)
    import matplotlib.pyplot as plt

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", bbox_inches="tight")  # "tight": the legend sits outside the axes
    finally:
        plt.close(fig)
    return path


#: float32's machine epsilon, 2**-23: one unit in the last place of a value in [1, 2)
FLOAT32_EPS = 2.0 ** -23


def layer_figure(comparison: "LayerComparison", title: str | None = None) -> Any:
    """The figure :func:`plot_layers` saves (the caller closes it).

    The x axis is the execution order of the compared layers, the y axis (log scale) each layer's own
    error (dots; red where the layer fails; its end-to-end max abs diff without one), its end-to-end max
    abs diff (grey crosses), its tolerance (line) and the float32 rounding floor, ``2**-23 x rms`` of
    its torch activation (dotted): one unit in the last place of a typical value, so an own error on or
    near it is rounding, not a defect. An exact zero sits at the bottom edge, drawn hollow. The first
    divergence is marked and named. The title, the variant and the verdict are wrapped to the width;
    the legend sits to the right of the axes, outside the data.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise OnnxParityError(f"plotting per-layer errors needs matplotlib: {_INSTALL_HINT}") from exc

    layers = comparison.layers
    width = min(24.0, 8.0 + 0.08 * len(layers))
    fig, ax = plt.subplots(figsize=(width, 5.2), dpi=110)
    if layers:
        _draw_layers(ax, comparison)
    else:
        ax.text(0.5, 0.5, comparison.message(), ha="center", va="center", transform=ax.transAxes, wrap=True)
        ax.set_axis_off()
    ax.set_xlabel("layer, in execution order")
    ax.set_ylabel("max |torch - onnx|")
    chars = int(width * 11)  # about as many 9-point characters as the figure is wide
    lines = [textwrap.fill(part, chars) for part in (title or "per-layer parity").split("\n")]
    lines.append(textwrap.fill(textwrap.shorten(comparison.message(), 2 * chars, placeholder=" ..."), chars))
    ax.set_title("\n".join(lines), fontsize=9, loc="left")
    ax.grid(True, which="major", axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _draw_layers(ax: Any, comparison: "LayerComparison") -> None:
    layers = comparison.layers
    floor, ceiling = _floor(comparison), _ceiling(comparison)
    x = list(range(len(layers)))

    def figure(layer: Any) -> float:  # what decides its verdict: its own error, else the growth rule's pair
        return layer.own_diff if layer.own_diff is not None else layer.max_abs_diff

    def drawn(value: float) -> float:
        return max(value, floor) if math.isfinite(value) else ceiling

    owned = any(layer.own_diff is not None for layer in layers)
    what = "own error" if owned else "max abs diff"
    diffs = [drawn(figure(layer)) for layer in layers]
    tols = [max(layer.own_tolerance if layer.own_diff is not None else layer.tolerance, floor) for layer in layers]
    ax.plot(x, tols, color="0.35", linewidth=1.2, label="tolerance (atol + rtol x rms)", zorder=2)
    ax.plot(x, [max(FLOAT32_EPS * layer.rms, floor) for layer in layers], color="tab:green", linestyle=":",
            linewidth=1.2, label="float32 rounding floor (2^-23 x rms):\nan own error near it is rounding", zorder=2)
    if owned:
        ax.scatter(x, [drawn(layer.max_abs_diff) for layer in layers], s=10, marker="x", color="0.6",
                   label="max abs diff, with what it inherited", zorder=2)
    groups = (("passed", "tab:blue", lambda layer: layer.passed and figure(layer) != 0),
              ("failed", "tab:red", lambda layer: not layer.passed))
    for word, color, member in groups:
        idx = [i for i, layer in enumerate(layers) if member(layer)]
        if idx:
            ax.scatter(idx, [diffs[i] for i in idx], s=16, color=color, label=f"{what} ({word})", zorder=3)
    zero = [i for i, layer in enumerate(layers) if layer.passed and figure(layer) == 0]
    if zero:
        ax.scatter(zero, [floor] * len(zero), s=16, facecolors="none", edgecolors="tab:blue", zorder=3,
                   label=f"{what} exactly 0 (drawn at the bottom)")
    first = comparison.first_divergence
    if first is not None:
        i = layers.index(first)
        ax.axvline(i, color="tab:red", linestyle="--", linewidth=0.9, zorder=1)
        ax.annotate(f"first divergence: {first.name}", xy=(i, diffs[i]), xytext=(6, -14), textcoords="offset points",
                    color="tab:red", fontsize=8,
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85})
    ax.set_yscale("log")
    ax.set_xlim(-0.5, len(layers) - 0.5)
    _label_ticks(ax, layers)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8, frameon=False)


def _figures(layer: Any) -> tuple[float, ...]:
    """A layer's drawn figures: its end-to-end difference and tolerance, and its own error and tolerance."""
    own = (layer.own_diff, layer.own_tolerance) if layer.own_diff is not None else ()
    return (layer.max_abs_diff, layer.tolerance, *own)


def _floor(comparison: "LayerComparison") -> float:
    """Smallest value drawn (a tenth of the smallest figure or rounding floor): exact zeros cannot sit on a log axis."""
    values = [v for layer in comparison.layers for v in (*_figures(layer), FLOAT32_EPS * layer.rms)
              if v > 0 and math.isfinite(v)]
    return min(values) / 10 if values else 1e-12


def _ceiling(comparison: "LayerComparison") -> float:
    values = [v for layer in comparison.layers for v in _figures(layer) if math.isfinite(v)]
    return max(values) * 10 if values else 1.0


def _label_ticks(ax: object, layers: list) -> None:
    n = len(layers)
    step = max(1, math.ceil(n / 40))
    ticks = list(range(0, n, step))
    ax.set_xticks(ticks)  # type: ignore[attr-defined]
    ax.set_xticklabels([layers[i].name for i in ticks], rotation=90, fontsize=6)  # type: ignore[attr-defined]
