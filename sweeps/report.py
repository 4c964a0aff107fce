"""Write a Markdown report with PNG figures comparing the runs of a directory or of a W&B project.

    python sweeps/report.py [--runs DIR_OR_GLOB ...] [--where key=value ...] [--out DIR]
    python sweeps/report.py --wandb_project P [--wandb_entity E] [--sweep S] [--group G] [--wandb_filters JSON] [--out DIR]

The same content as notebooks/compare.ipynb and notebooks/reproduce.ipynb, without Jupyter:
Last, Avg, forgetting and BWT per method and bench (mean ± 95% CI over seeds, Student t), paired
t-tests and Wilcoxon signed-rank tests with Holm correction, the efficiency table, A_t curves with
confidence bands, accuracy-matrix heatmaps, and the reproduction ledgers (paper against ours).
Runs that differ only in their seed form one group; a strategy with several configurations on a
bench is shown once per configuration, labelled by the keys that differ (``cl_lora (epochs=1)``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

import cl_bench.catalog  # noqa: E402,F401  (every strategy, bench and backbone name)
from cl_bench.cli import ArgumentParser  # noqa: E402
from cl_bench.errors import UserError, report_errors  # noqa: E402

PROG = "sweeps/report.py"
DEFAULT_OUT = "reports"
FIGURES = "figures"
#: Metrics the significance tests compare methods on.
TESTED_METRICS = ("last_accuracy", "avg_accuracy")
REPRODUCTION_HEADING = "## Reproduction ledgers: paper numbers against ours"


class ReportError(UserError):
    """Bad input: reported as one line on stderr with exit code 2."""


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", action="append", metavar="DIR_OR_GLOB",
                        help="a directory of run records, or a glob of run directories such as 'runs/cl_lora-*'; "
                             "repeat to combine (default: runs)")
    parser.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                        help="only runs whose config key or column (strategy, seed, run, group, ...) has this value; "
                             "KEY=V1,V2 for any of several, KEY!=VALUE to exclude; repeat to narrow further")
    parser.add_argument("--wandb_project", help="read the runs of this W&B project instead (needs network)")
    parser.add_argument("--wandb_entity", help="W&B entity (team or user) of the project")
    parser.add_argument("--wandb_filters", metavar="JSON",
                        help='W&B server-side filter, e.g. \'{"config.epochs": 3}\' (with --wandb_project)')
    parser.add_argument("--sweep", help="only the runs of this W&B sweep id (with --wandb_project)")
    parser.add_argument("--group", help="only the runs of this W&B group")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    return parser


def parse_args(argv: list[str]):
    return build_parser().parse_args(argv)


def load(args: argparse.Namespace):
    from cl_bench import analysis

    for option in ("sweep", "wandb_filters"):
        if getattr(args, option) and not args.wandb_project:
            raise ReportError(f"--{option} needs --wandb_project")
    try:
        filters = json.loads(args.wandb_filters) if args.wandb_filters else None
    except json.JSONDecodeError as error:
        raise ReportError(f"--wandb_filters is not JSON: {error}") from error
    try:
        runs, source = analysis.load_runs(args.runs or ["runs"], wandb_project=args.wandb_project,
                                          entity=args.wandb_entity, sweep=args.sweep, group=args.group,
                                          wandb_filters=filters, where=args.where)
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
        "(no interval with a single seed). Runs that differ only in their seed form one row; a strategy "
        "with several configurations on a bench has one row per configuration, labelled by the config keys "
        "that differ between them.", "",
        "## Results", "",
    ]
    benches = summary[["bench", "split"]].drop_duplicates().itertuples(index=False)
    bench_splits = [(b.bench, b.split) for b in benches]
    for bench, split in bench_splits:
        in_bench = (summary["bench"] == bench) & (summary["split"] == split)
        lines += [f"### {bench} {split}", "", analysis.markdown_table(analysis.summary_display(summary[in_bench]).drop(columns=["bench", "split"])), ""]
        name = f"curves-{analysis.slug(bench)}-{analysis.slug(split)}.png"
        block = curves[(curves["bench"] == bench) & (curves["split"] == split)]
        _save(plots.accuracy_curves_figure(block, title=f"A_t on {bench} {split}"), figures / name)
        lines += [f"![A_t curves, {bench} {split}]({FIGURES}/{name})", ""]

    lines += ["## Significance", "",
              "Pairs of methods evaluated under the same protocol (bench, split, class order, backbone), over the "
              "seeds both ran: paired t-test and Wilcoxon signed-rank test of A − B, Holm-corrected over the pairs "
              f"of each protocol. Pairs with fewer than {analysis.MIN_PAIRED_SEEDS} common seeds are left out; "
              "n/a: no variation in the differences.", ""]
    for metric in TESTED_METRICS:
        tests = analysis.paired_tests(runs, metric)
        testable = tests[tests["n_seeds"] >= analysis.MIN_PAIRED_SEEDS]
        lines += [f"### {analysis.METRIC_LABELS[metric]}", ""]
        if len(testable):
            lines += [analysis.markdown_table(analysis.paired_display(testable)), ""]
        else:
            lines += ["No pair of methods shares two seeds under one protocol: nothing to test.", ""]
        if len(tests) > len(testable):
            lines += [f"{len(tests) - len(testable)} pair(s) left out: fewer than {analysis.MIN_PAIRED_SEEDS} common seeds.", ""]

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

    lines += ["## Run sets", "", "The groups above: each is one configuration without its seed; the label names the "
              "keys that differ between the configurations of a strategy on a bench.", "",
              analysis.markdown_table(analysis.run_sets(runs)), ""]

    ledger = analysis.load_ledgers(analysis.ledger_paths(REPO))
    lines += [REPRODUCTION_HEADING, "",
              "Paper numbers and ours from the ledgers' data (`strategies/*/ledger.yaml`, `baselines/ledger.yaml`), "
              "and the runs of this report whose configuration is the one the entry's command runs (seeds aside); "
              "runs of the same strategy, bench and split with another configuration are counted, not used.", "",
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
