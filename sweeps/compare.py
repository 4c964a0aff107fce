"""Run several strategies on one bench, seed by seed, and print their results side by side.

    python sweeps/compare.py --bench digits_animals [--strategies cl_lora,ease] [--seeds 0,1993,1994] [--key=value ...]

Every --key=value goes to every run (so it must be a key of every strategy named). All configs are
validated before the first run starts. Runs already finished are not repeated (their records are
read back), so an interrupted comparison continues where it stopped.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cl_bench.catalog  # noqa: E402,F401  (every strategy, bench and backbone name)
from cl_bench.cli import parse_args  # noqa: E402
from cl_bench.config import resolve_config  # noqa: E402
from cl_bench.errors import ConfigError, report_errors  # noqa: E402
from cl_bench.registry import BENCHES, STRATEGIES  # noqa: E402

PROG = "sweeps/compare.py"


def main(argv: list[str] | None = None) -> int:
    return report_errors(PROG, lambda: _main(sys.argv[1:] if argv is None else list(argv)))


def _main(argv: list[str]) -> int:
    values, want_help = parse_args(argv)
    if want_help:
        print(__doc__)
        return 0
    bench = values.pop("bench", "digits_animals")
    strategies = values.pop("strategies", ",".join(STRATEGIES.names())).split(",")
    try:
        seeds = [int(s) for s in values.pop("seeds", "1993").split(",")]
    except ValueError:
        raise ConfigError("--seeds expects comma-separated integers", key="seeds") from None
    configs = [resolve_config(name, bench, {**values, "seed": seed, "resume": "true"})
               for name in strategies for seed in seeds]
    BENCHES[bench].check_data(configs[0].bench)

    import pandas as pd

    from cl_bench.analysis import format_mean_ci, load_local_runs, select_runs, summary_table
    from cl_bench.experiment import run_experiment
    from cl_bench.metrics import chance_curve

    names = []
    for config in configs:
        print(f"\n== {config.run.strategy}, seed {config.run.seed}", flush=True)
        record = run_experiment(config, quiet=False)
        names.append(record.data["run_name"])

    out_dir = configs[0].run.out_dir
    runs = select_runs(load_local_runs(out_dir), run_names=names)  # labelled among these runs only
    table = summary_table(runs)
    chance = chance_curve(configs[0].classes_per_experience())
    efficiency = runs.groupby("method")[["trainable_parameters", "vit_passes_per_image", "train_images_per_s",
                                         "eval_images_per_s", "eval_harness_speedup"]].median()
    width = max(12, *(len(m) for m in table["method"]))
    lines = [
        f"\n{bench} {table['split'].iloc[0]}, seeds {','.join(map(str, seeds))} (Last/Avg in %, mean ± 95% CI over seeds; "
        "ViT passes and eval img/s on new test images; cache x: the harness's query-cache speed-up, not a method cost)",
        f"{'strategy':<{width}} {'Last':>14} {'Avg':>14} {'forgetting':>14} {'trainable':>10} {'ViT passes':>10} "
        f"{'train img/s':>11} {'eval img/s':>10} {'cache x':>7}",
    ]
    for row in table.itertuples():
        e = efficiency.loc[row.method]
        lines.append(
            f"{row.method:<{width}} {format_mean_ci(row.last_accuracy, row.last_accuracy_ci):>14} "
            f"{format_mean_ci(row.avg_accuracy, row.avg_accuracy_ci):>14} {format_mean_ci(row.forgetting, row.forgetting_ci):>14} "
            f"{int(e.trainable_parameters or 0):>10d} {e.vit_passes_per_image:>10.2f} "
            f"{(e.train_images_per_s or float('nan')):>11.0f} {e.eval_images_per_s:>10.0f} "
            f"{'-' if pd.isna(e.eval_harness_speedup) or e.eval_harness_speedup == 1 else f'{e.eval_harness_speedup:.2f}':>7}"
        )
    lines.append(f"{'chance':<{width}} {100 * chance[-1]:>14.2f} {100 * sum(chance) / len(chance):>14.2f}")
    lines.append(f"\nRun records: {Path(out_dir).expanduser()}/<run>/record.json. Report with figures and significance "
                 f"tests: python sweeps/report.py --runs {out_dir}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    from cl_bench.tracking import exit_now_if_start_abandoned

    code = main()
    exit_now_if_start_abandoned(code)  # W&B's exit handlers would wait 25-38 s for an abandoned start
    sys.exit(code)
