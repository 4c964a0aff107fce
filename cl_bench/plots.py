"""Figures shared by W&B logging, the notebooks and the Markdown report."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["accuracy_matrix_figure", "accuracy_matrices_figure", "accuracy_curves_figure", "run_curves_figure", "figure_png"]

#: Confidence level the curve bands are labelled with by default (``cl_bench.analysis.CONFIDENCE``).
DEFAULT_CONFIDENCE = 0.95
#: Opacity of a confidence band, light enough that overlapping bands stay readable.
BAND_ALPHA = 0.2
#: Heatmap panels side by side before a new row starts (keeps the figure readable on a page).
PANELS_PER_ROW = 3


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


def figure_png(fig, dpi: int = 110) -> bytes:
    """PNG bytes of a Figure (notebooks register this as the Figure's PNG formatter: without pyplot
    a bare Figure would display as text)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def accuracy_curves_figure(curves, title: str = "", ax=None, confidence: float = DEFAULT_CONFIDENCE):
    """``A_t`` (%) against the experience for each method: the mean over seeds as a line and its
    Student-t confidence interval as a band (no band for a single seed).

    ``curves`` is ``cl_bench.analysis.curve_summary`` output for one bench and split.
    """
    import seaborn as sns
    from matplotlib.figure import Figure

    if ax is None:
        fig = Figure(figsize=(6.4, 4.0), layout="tight")
        ax = fig.subplots()
    else:
        fig = ax.figure
    methods = sorted(curves["method"].unique())
    for method, colour in zip(methods, sns.color_palette("colorblind", len(methods))):
        block = curves[curves["method"] == method].sort_values("experience")
        seeds = int(block["n_seeds"].min())
        mean = block["mean"].to_numpy(dtype=float) * 100
        half = block["ci"].to_numpy(dtype=float) * 100
        ax.plot(block["experience"], mean, marker="o", markersize=3, color=colour, label=f"{method} ({seeds} seed{'' if seeds == 1 else 's'})")
        if not np.isnan(half).all():
            ax.fill_between(block["experience"], mean - half, mean + half, color=colour, alpha=BAND_ALPHA, linewidth=0)
    ax.set_xlabel("after training experience t")
    ax.set_ylabel(f"A_t (%), mean ± {100 * confidence:g}% CI")
    ax.set_ylim(0, 100)
    if len(curves):
        ax.set_xticks(sorted(curves["experience"].unique()))
    ax.grid(alpha=0.3)
    if methods:
        ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def run_curves_figure(*, accuracy, old, new, chance, title: str = ""):
    """One run's ``A_t``, old- and new-class accuracy and chance (%) against the experience."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), layout="tight")
    ax = fig.subplots()
    experiences = list(range(len(accuracy)))
    for label, values, style in (("A_t (all seen classes)", accuracy, "o-"), ("old classes", old, "s--"),
                                 ("new classes", new, "^--"), ("chance", chance, ":")):
        ys = [np.nan if v is None else 100 * v for v in values]
        ax.plot(experiences, ys, style, markersize=3, label=label)
    ax.set_xlabel("after training experience t")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_xticks(experiences)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def accuracy_matrices_figure(matrices, title: str = ""):
    """One ``accuracy_matrix_figure`` panel per method (``matrices``: method -> R), in rows of at
    most ``PANELS_PER_ROW``."""
    from matplotlib.figure import Figure

    n = max(len(matrices), 1)
    columns = min(n, PANELS_PER_ROW)
    rows = -(-n // columns)
    T = max((len(R) for R in matrices.values()), default=1)
    panel = min(2 + 0.45 * T, 8)
    fig = Figure(figsize=(panel * columns, panel * 0.85 * rows), layout="tight")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (method, R) in zip(axes, matrices.items()):
        accuracy_matrix_figure(R, title=method, ax=ax)
    for ax in axes[len(matrices):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return fig
