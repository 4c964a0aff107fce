"""Figures shared by W&B logging, the notebooks and the Markdown report."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["accuracy_matrix_figure"]


def accuracy_matrix_figure(R: Sequence[Sequence[float]], title: str = "", ax=None):
    """Heatmap of ``R[t][i]`` in percent; cells with ``i > t`` stay blank."""
    import seaborn as sns
    from matplotlib.figure import Figure  # no pyplot: no global backend state, safe in notebooks

    T = len(R)
    grid = np.full((T, T), np.nan)
    for t, row in enumerate(R):
        grid[t, : t + 1] = np.asarray(row[: t + 1], dtype=float) * 100
    if ax is None:
        size = min(2 + 0.45 * T, 12)
        fig = Figure(figsize=(size, size * 0.8), layout="tight")
        ax = fig.subplots()
    else:
        fig = ax.figure
    sns.heatmap(grid, ax=ax, vmin=0, vmax=100, cmap="viridis", annot=T <= 12, fmt=".0f",
                cbar_kws={"label": "accuracy (%)"}, mask=np.isnan(grid))
    ax.set_xlabel("test experience i")
    ax.set_ylabel("after training experience t")
    if title:
        ax.set_title(title)
    return fig
