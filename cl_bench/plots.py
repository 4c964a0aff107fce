"""Figures shared by W&B logging, the notebooks and the Markdown report.

They stay readable with many methods: up to 10 lines take the colour-blind palette, more take
20 distinct colours, and each line also has its own marker; legends of more than a few lines sit
outside the axes; titles are wrapped to their panel's width.
"""

from __future__ import annotations

import textwrap
from typing import Sequence

import numpy as np

__all__ = ["accuracy_matrix_figure", "accuracy_matrices_figure", "accuracy_curves_figure", "run_curves_figure", "figure_png",
           "line_styles"]

#: Confidence level the curve bands are labelled with by default (``cl_bench.analysis.CONFIDENCE``).
DEFAULT_CONFIDENCE = 0.95
#: Opacity of a confidence band, light enough that overlapping bands stay readable.
BAND_ALPHA = 0.15
#: Heatmap panels side by side before a new row starts (keeps the figure readable on a page).
PANELS_PER_ROW = 3
#: Lines a legend inside the axes may hold before it moves outside, to the right.
LEGEND_INSIDE_MAX = 4
#: Markers cycled over the lines, so lines of similar colour still differ.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p")
#: Characters per inch of a title before it wraps (the default title font).
TITLE_CHARS_PER_INCH = 9


def line_styles(n: int) -> list[tuple[tuple[float, float, float], str, str]]:
    """``n`` (colour, marker, dash) triples, all different: the colour-blind palette up to 10 lines,
    tab20 ordered dark shades first up to 20, evenly spaced hues beyond; markers cycle, and lines
    past the first ten are dashed."""
    import seaborn as sns

    if n <= 10:
        colours = sns.color_palette("colorblind", n)
    elif n <= 20:
        tab20 = sns.color_palette("tab20", 20)
        colours = [tab20[i] for i in (*range(0, 20, 2), *range(1, 20, 2))][:n]
    else:
        colours = sns.color_palette("husl", n)
    return [(tuple(colours[i]), MARKERS[i % len(MARKERS)], "-" if i < 10 else "--") for i in range(n)]


def _wrapped(title: str, width_inches: float) -> str:
    return "\n".join(textwrap.wrap(title, max(int(width_inches * TITLE_CHARS_PER_INCH), 12))) if title else title


def accuracy_matrix_figure(R: Sequence[Sequence[float]], title: str = "", ax=None):
    """Heatmap of ``R[t][i]`` in percent; cells with ``i > t`` stay blank."""
    import seaborn as sns
    from matplotlib.figure import Figure  # no pyplot: no global backend state, safe in notebooks

    T = len(R)
    grid = np.full((T, T), np.nan)
    for t, row in enumerate(R):
        grid[t, : t + 1] = np.asarray(row[: t + 1], dtype=float) * 100
    own_figure = ax is None
    if own_figure:
        size = min(2 + 0.45 * T, 12)
        fig = Figure(figsize=(max(size, 4.0), max(size, 4.0) * 0.8), layout="constrained")
        ax = fig.subplots()
    else:
        fig = ax.figure
    import pandas as pd

    numbered = pd.DataFrame(grid, index=range(1, T + 1), columns=range(1, T + 1))  # experiences count from 1
    sns.heatmap(numbered, ax=ax, vmin=0, vmax=100, cmap="viridis", annot=T <= 12, fmt=".0f",
                cbar_kws={"label": "accuracy (%)"}, mask=np.isnan(grid))
    ax.set_xlabel("test experience i")
    ax.set_ylabel("after training experience t")
    if title:
        width = fig.get_figwidth() if own_figure else ax.get_position().width * fig.get_figwidth()
        ax.set_title(_wrapped(title, max(width, 2.5)), fontsize="medium")
    return fig


def figure_png(fig, dpi: int = 110) -> bytes:
    """PNG bytes of a Figure (notebooks register this as the Figure's PNG formatter: without pyplot
    a bare Figure would display as text)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def accuracy_curves_figure(curves, title: str = "", ax=None, confidence: float = DEFAULT_CONFIDENCE):
    """``A_t`` (%) against the experience for each method: the mean over seeds as a line, its
    Student-t confidence interval as a band (no band for a single seed), and chance as a dashed
    grey line when ``curves`` has a ``chance`` column.

    ``curves`` is ``cl_bench.analysis.curve_summary`` output for one bench and split.
    """
    from matplotlib.figure import Figure

    methods = sorted(curves["method"].unique())
    outside = len(methods) > LEGEND_INSIDE_MAX
    if ax is None:
        fig = Figure(figsize=(6.4, 4.0), layout="constrained")
        ax = fig.subplots()
    else:
        fig = ax.figure
    for method, (colour, marker, dash) in zip(methods, line_styles(len(methods))):
        block = curves[curves["method"] == method].sort_values("experience")
        seeds = int(block["n_seeds"].min())
        mean = block["mean"].to_numpy(dtype=float) * 100
        half = block["ci"].to_numpy(dtype=float) * 100
        ax.plot(block["experience"] + 1, mean, marker=marker, markersize=4, linestyle=dash, color=colour,
                label=f"{method} ({seeds} seed{'' if seeds == 1 else 's'})")
        if not np.isnan(half).all():
            ax.fill_between(block["experience"] + 1, mean - half, mean + half, color=colour, alpha=BAND_ALPHA, linewidth=0)
    if "chance" in curves and curves["chance"].notna().any():
        chance = curves.drop_duplicates("experience").sort_values("experience")
        ax.plot(chance["experience"] + 1, chance["chance"] * 100, linestyle=(0, (4, 3)), color="0.45", linewidth=1.2,
                label="chance")
    ax.set_xlabel("after training experience t")
    ax.set_ylabel(f"A_t (%), mean ± {100 * confidence:g}% CI")
    ax.set_ylim(0, 100)
    if len(curves):
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(nbins=min(curves["experience"].nunique(), 20), integer=True))
    ax.grid(alpha=0.3)
    if methods:
        if outside:  # beside the axes: many lines never cover the curves
            ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
        else:
            ax.legend(fontsize="small", loc="lower left")
    if title:
        ax.set_title(_wrapped(title, fig.get_figwidth()))
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
    most ``PANELS_PER_ROW``; the overall title sits above the panels' own (constrained layout)."""
    from matplotlib.figure import Figure

    n = max(len(matrices), 1)
    columns = min(n, PANELS_PER_ROW)
    rows = -(-n // columns)
    T = max((len(R) for R in matrices.values()), default=1)
    panel = min(max(2 + 0.45 * T, 3.8), 8)
    fig = Figure(figsize=(panel * columns, panel * 0.9 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (method, R) in zip(axes, matrices.items()):
        accuracy_matrix_figure(R, title=_wrapped(method, panel * 0.8), ax=ax)
    for ax in axes[len(matrices):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(_wrapped(title, panel * columns), fontsize="large", fontweight="bold")
    return fig
