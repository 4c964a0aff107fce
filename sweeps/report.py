"""Write a Markdown report with PNG figures comparing the runs of a directory or of a W&B project.

    python sweeps/report.py [--runs DIR] [--out DIR]
    python sweeps/report.py --wandb-project P [--entity E] [--sweep S] [--group G] [--out DIR]

The same content as notebooks/compare.ipynb and notebooks/reproduce.ipynb, without Jupyter:
Last, Avg, forgetting and BWT per method and bench (mean ± 95% CI over seeds, Student t), paired
t-tests and Wilcoxon signed-rank tests with Holm correction, the efficiency table, A_t curves with
confidence bands, accuracy-matrix heatmaps, and the reproduction ledgers (paper against ours).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from cl_bench.errors import UserError, report_errors  # noqa: E402

PROG = "sweeps/report.py"
DEFAULT_OUT = "reports"
FIGURES = "figures"
#: Metrics the significance tests compare methods on.
TESTED_METRICS = ("last_accuracy", "avg_accuracy")
REPRODUCTION_HEADING = "## Reproduction ledgers: paper numbers against ours"


class ReportError(UserError):
    """Bad input: reported as one line on stderr with exit code 2."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="runs", help="directory of run records (default: runs)")
    parser.add_argument("--wandb-project", help="read the runs of this W&B project instead (needs network)")
    parser.add_argument("--entity", help="W&B entity of the project")
    parser.add_argument("--sweep", help="only the runs of this W&B sweep id")
    parser.add_argument("--group", help="only the runs of this group")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    return parser.parse_args(argv)


def load(args: argparse.Namespace):
    from cl_bench import analysis

    if args.sweep and not args.wandb_project:
        raise ReportError("--sweep needs --wandb-project")
    try:
        runs, source = analysis.load_runs(args.runs, wandb_project=args.wandb_project, entity=args.entity,
                                          sweep=args.sweep, group=args.group)
    except (FileNotFoundError, ValueError) as error:
        raise ReportError(str(error)) from error
    except Exception as error:  # W&B: no network, no key, no such project
        if not args.wandb_project:
            raise
        raise ReportError(f"could not read W&B project {args.wandb_project}: {type(error).__name__}: {error}") from error
    if runs.empty:
        raise ReportError(f"no finished runs in {source}")
    return runs, source


def _save(fig, path: Path) -> None:
    from cl_bench.plots import figure_png

    path.write_bytes(figure_png(fig))


def build_report(runs, source: str, out: Path) -> str:
    """The report's Markdown; figures are written under ``out/figures``."""
    from cl_bench import analysis, plots

    figures = out / FIGURES
    figures.mkdir(parents=True, exist_ok=True)
    level = f"{100 * analysis.CONFIDENCE:g}%"
    summary = analysis.summary_table(runs)
    curves = analysis.curve_summary(runs)
    lines = [
        "# cl-bench comparison report", "",
        f"Source: {source}; {len(runs)} finished runs. Written by `python {PROG}` on {time.strftime('%Y-%m-%d %H:%M')}.", "",
        f"Last = A_T and Avg = mean of A_t over experiences (%), forgetting and BWT in percentage points; "
        f"each as the mean ± half-width of the {level} Student-t confidence interval over seeds "
        "(no interval with a single seed).", "",
        "## Results", "",
    ]
    benches = summary[["bench", "split"]].drop_duplicates().itertuples(index=False)
    bench_splits = [(b.bench, b.split) for b in benches]
    for bench, split in bench_splits:
        in_bench = (summary["bench"] == bench) & (summary["split"] == split)
        lines += [f"### {bench} {split}", "", analysis.markdown_table(analysis.summary_display(summary[in_bench]).drop(columns=["bench", "split"])), ""]
        name = f"curves-{analysis.slug(bench)}-{analysis.slug(split)}.png"
        block = curves[(curves["bench"] == bench) & (curves["split"] == split)]
        _save(plots.accuracy_curves_figure(block, title=f"{bench} {split}"), figures / name)
        lines += [f"![A_t curves, {bench} {split}]({FIGURES}/{name})", ""]

    lines += ["## Significance", "",
              "Pairs of methods on the same bench and split, over the seeds both ran: paired t-test and "
              "Wilcoxon signed-rank test of A − B, Holm-corrected over the pairs of each bench and split. "
              "n/a: undefined (fewer than two common seeds, or no variation in the differences).", ""]
    for metric in TESTED_METRICS:
        tests = analysis.paired_tests(runs, metric)
        lines += [f"### {analysis.METRIC_LABELS[metric]}", ""]
        lines += [analysis.markdown_table(analysis.paired_display(tests)) if len(tests)
                  else "Only one method per bench: no pairs to test.", ""]

    lines += ["## Efficiency", "", "Medians over runs; passes and images/s at test time unless named train.", "",
              analysis.markdown_table(analysis.efficiency_display(analysis.efficiency_table(runs))), ""]

    lines += ["## Accuracy matrices", "", "R[t][i]: accuracy (%) on experience i after training experience t, mean over seeds.", ""]
    for bench, split in bench_splits:
        lines += [f"### {bench} {split}", ""]
        in_bench = runs[(runs["bench"] == bench) & (runs["split"] == split)]
        for method, block in in_bench.groupby("method", sort=True):
            name = f"R-{analysis.slug(bench)}-{analysis.slug(split)}-{analysis.slug(method)}.png"
            seeds = block["seed"].nunique()
            title = f"{method}, {bench} {split} ({seeds} seed{'' if seeds == 1 else 's'})"
            _save(plots.accuracy_matrix_figure(analysis.mean_accuracy_matrix(block), title=title), figures / name)
            lines += [f"![{title}]({FIGURES}/{name})", ""]

    ledger = analysis.load_ledgers(analysis.ledger_paths(REPO))
    lines += [REPRODUCTION_HEADING, "",
              "Paper numbers and ours from the ledgers' data (`strategies/*/ledger.yaml`, `baselines/ledger.yaml`), "
              "and the runs of this report where their strategy, bench and split match an entry.", "",
              analysis.markdown_table(analysis.reproduction_table(ledger, runs).drop(columns=["paper source"])), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return report_errors(PROG, lambda: _main(sys.argv[1:] if argv is None else list(argv)))


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    runs, source = load(args)
    out = Path(args.out)
    path = out / "report.md"
    try:
        text = build_report(runs, source, out)
        path.write_text(text)
    except OSError as error:
        raise ReportError(f"cannot write the report in {out} ({error.strerror or error})") from None
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
