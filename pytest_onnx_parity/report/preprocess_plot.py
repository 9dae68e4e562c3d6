"""A heat map of where a deployment's preprocessed photo differs from timm's, in 8-bit levels.

matplotlib is optional (``pip install "pytest-onnx-parity[plots]"``): without it :func:`plot_level_map`
returns ``None`` and nothing is drawn. It is imported only when a map is drawn.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def plot_level_map(level_map: Any, path: str | os.PathLike[str], title: str = "") -> Path | None:
    """Write a PNG of ``level_map`` (H,W: the largest difference over the channels, in 8-bit levels, as
    :meth:`~..preprocessing.diagnose.PreprocessingComparison.level_map` gives it) to ``path``; ``None``
    when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    import numpy as np

    data = np.asarray(level_map, dtype=np.float64)
    path = Path(path)
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    try:
        image = ax.imshow(data, cmap="magma", vmin=0.0, vmax=max(1.0, float(data.max())), interpolation="nearest")
        fig.colorbar(image, ax=ax, label="difference, 8-bit levels (max over channels)")
        ax.set_title(title or "your preprocessing against timm's", fontsize=9, wrap=True)
        ax.set_xticks([])
        ax.set_yticks([])
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return path
