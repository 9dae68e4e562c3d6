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

__all__ = ["layer_plot", "plot_file", "plot_layers"]

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
    """Write a PNG of each layer's own error against its tolerance, along the depth.

    The x axis is the execution order of the compared layers, the y axis (log
    scale) each layer's own error (dots; red where the layer fails; its end-to-end
    max abs diff without one), its end-to-end max abs diff (grey crosses) and the
    tolerance (line). The first divergence is marked and named. Returns the path written.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise OnnxParityError(f"plotting per-layer errors needs matplotlib: {_INSTALL_HINT}") from exc

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    layers = comparison.layers
    floor = _floor(comparison)
    x = list(range(len(layers)))
    def drawn(value: float) -> float:
        return max(value, floor) if math.isfinite(value) else _ceiling(comparison)

    owned = [layer.own_diff is not None for layer in layers]
    # what decides each verdict: its own error against its own tolerance (the growth rule's pair without one)
    diffs = [drawn(layer.own_diff if layer.own_diff is not None else layer.max_abs_diff) for layer in layers]
    tols = [max(layer.own_tolerance if layer.own_diff is not None else layer.tolerance, floor) for layer in layers]
    inherited = [drawn(layer.max_abs_diff) for layer in layers]

    fig, ax = plt.subplots(figsize=(min(24.0, 6.0 + 0.08 * len(layers)), 4.8), dpi=110)
    try:
        if layers:
            ax.plot(x, tols, color="0.35", linewidth=1.2, label="tolerance (atol + rtol * rms)", zorder=2)
            ok = [i for i, layer in enumerate(layers) if layer.passed]
            bad = [i for i, layer in enumerate(layers) if not layer.passed]
            what = "own error" if any(owned) else "max abs diff"
            if any(owned):
                ax.scatter(x, inherited, s=10, marker="x", color="0.6", label="max abs diff, with what it inherited",
                           zorder=2)
            ax.scatter(ok, [diffs[i] for i in ok], s=14, color="tab:blue", label=f"{what} (passed)", zorder=3)
            if bad:
                ax.scatter(bad, [diffs[i] for i in bad], s=18, color="tab:red", label=f"{what} (failed)", zorder=4)
            first = comparison.first_divergence
            if first is not None:
                i = layers.index(first)
                ax.axvline(i, color="tab:red", linestyle="--", linewidth=0.9, zorder=1)
                ax.annotate(
                    f"first divergence: {first.name}",
                    xy=(i, diffs[i]),
                    xytext=(6, -14),
                    textcoords="offset points",
                    color="tab:red",
                    fontsize=8,
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85},
                )
            ax.set_yscale("log")
            ax.set_xlim(-0.5, len(layers) - 0.5)
            _label_ticks(ax, layers)
            ax.legend(loc="upper left", fontsize=8, frameon=False)
        else:
            ax.text(0.5, 0.5, comparison.message(), ha="center", va="center", transform=ax.transAxes, wrap=True)
            ax.set_axis_off()
        ax.set_xlabel("layer, in execution order")
        ax.set_ylabel("max |torch - onnx|")
        heading = title or "per-layer parity"
        ax.set_title(heading + "\n" + textwrap.shorten(comparison.message(), 150, placeholder=" ..."), fontsize=9)
        ax.grid(True, which="major", axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def _figures(layer: Any) -> tuple[float, ...]:
    """A layer's drawn figures: its end-to-end difference and tolerance, and its own error and tolerance."""
    own = (layer.own_diff, layer.own_tolerance) if layer.own_diff is not None else ()
    return (layer.max_abs_diff, layer.tolerance, *own)


def _floor(comparison: "LayerComparison") -> float:
    """Smallest value drawn: exact zeros cannot sit on a log axis."""
    values = [v for layer in comparison.layers for v in _figures(layer) if v > 0 and math.isfinite(v)]
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
