"""cl_bench.plots with many methods: distinct styles, the legend beside the axes, a chance line, and
titles that wrap instead of running into each other."""

from __future__ import annotations

import pandas as pd
import pytest

from cl_bench import analysis, plots

SPLIT = "B4-4-5"


def fake_curves(n_methods: int) -> pd.DataFrame:
    """``curve_summary``-shaped rows for ``n_methods`` methods on a B4-4-5 split."""
    rows = []
    for i in range(n_methods):
        for t in range(5):
            rows.append({"bench": "digits_animals", "split": SPLIT, "method": f"cl_lora (lr=0.00{i}, rank={i % 4})",
                         "experience": t, "mean": 0.9 - 0.02 * i - 0.05 * t, "ci": 0.02, "n_seeds": 3,
                         "chance": 1 / (4 * (t + 1))})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("n", [2, 5, 12, 25])
def test_line_styles_never_repeat(n):
    styles = plots.line_styles(n)
    assert len(styles) == n == len(set(styles))
    assert len({colour for colour, _, _ in styles}) == n


@pytest.mark.parametrize("n", [2, 12])
def test_curves_of_many_methods_keep_the_legend_off_the_axes_and_draw_chance(n):
    fig = plots.accuracy_curves_figure(fake_curves(n), title="A_t on digits_animals " + SPLIT)
    ax = fig.axes[0]
    legend = ax.get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    assert len(labels) == n + 1 and labels[-1] == "chance"
    chance = next(line for line in ax.get_lines() if line.get_label() == "chance")
    assert list(chance.get_ydata()) == pytest.approx([25.0, 12.5, 100 / 12, 6.25, 5.0])
    assert chance.get_linestyle() == "--"
    assert (legend.get_bbox_to_anchor().x0 > ax.get_window_extent().x1) == (n > plots.LEGEND_INSIDE_MAX)
    assert plots.figure_png(fig).startswith(b"\x89PNG")


def test_heatmap_grid_of_twelve_methods_renders_with_titles_that_do_not_overlap():
    T = 5
    matrices = {f"method {i} with a long configuration label (lr=0.00{i}, epochs={i})": [[0.8] * (t + 1) for t in range(T)]
                for i in range(12)}
    fig = plots.accuracy_matrices_figure(matrices, title="digits_animals B4-4-5: accuracy matrices, mean over seeds")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    assert plots.figure_png(fig).startswith(b"\x89PNG")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # the final layout
    renderer = canvas.get_renderer()
    boxes = [fig._suptitle.get_window_extent(renderer)] + [ax.title.get_window_extent(renderer)
                                                           for ax in fig.axes if ax.get_title()]
    assert len(boxes) == 13
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), "two titles overlap"
    assert all("\n" in ax.get_title() for ax in fig.axes if ax.get_title())  # long labels wrap


def test_curve_summary_carries_chance_from_the_split(tmp_path):
    from helpers import write_fake_record

    write_fake_record(tmp_path, strategy="a", bench="bench_x", seed=0, R=[[0.5], [0.5, 0.5]])
    curves = analysis.curve_summary(analysis.load_local_runs(tmp_path))
    assert list(curves["chance"]) == pytest.approx([0.5, 0.25])  # B2-2-2: one over 2, then 4 classes
