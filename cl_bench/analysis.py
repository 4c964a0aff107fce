"""Runs to tables: one tidy pandas table from local run records or from W&B, confidence intervals,
paired significance tests and the efficiency table. The notebooks and ``sweeps/report.py`` call
these functions; nothing here trains.

Both loaders give the same columns, one row per run; list-valued columns hold the ``A_t`` curve
and the ``R`` matrix.
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from cl_bench.record import RECORD_FILE

__all__ = [
    "RUN_COLUMNS",
    "METRICS",
    "load_local_runs",
    "load_wandb_runs",
    "runs_from_wandb_objects",
    "mean_ci",
    "summary_table",
    "holm",
    "paired_tests",
    "curves_long",
    "mean_accuracy_matrix",
    "efficiency_table",
    "split_name",
    "load_ledgers",
    "ledger_table",
    "ledger_markdown",
    "format_mean_ci",
]

METRICS = ("last_accuracy", "avg_accuracy", "forgetting", "bwt")
EFFICIENCY = (
    "trainable_parameters", "stored_parameters", "vit_passes_per_image", "train_images_per_s",
    "eval_images_per_s", "peak_memory_mb", "wall_seconds",
)
RUN_COLUMNS = (
    "run", "strategy", "bench", "split", "seed", "group", "status", "backbone", "preset",
    *METRICS, "accuracy_curve", "R", "n_experiences", *EFFICIENCY, "source",
)


def split_name(classes_per_experience: Sequence[int]) -> str:
    """``B{init}-{inc}-{T}``."""
    sizes = list(classes_per_experience)
    inc = sizes[1] if len(sizes) > 1 else sizes[0]
    return f"B{sizes[0]}-{inc}-{len(sizes)}"


def _row(*, run: str, config: dict[str, Any], summary: dict[str, Any], R: list, status: str,
         group: str | None, classes: Sequence[int], efficiency: dict[str, Any], source: str) -> dict[str, Any]:
    memory = efficiency.get("peak_cuda_allocated_mb", efficiency.get("peak_rss_mb"))
    per_exp = efficiency.get("trainable_parameters_per_experience") or [None]
    return {
        "run": run,
        "strategy": config.get("strategy"),
        "bench": config.get("bench"),
        "split": split_name(classes) if classes else None,
        "seed": config.get("seed"),
        "group": group,
        "status": status,
        "backbone": config.get("backbone"),
        "preset": config.get("preset"),
        **{m: summary.get(m) for m in METRICS},
        "accuracy_curve": list(summary.get("accuracy_curve") or []),
        "R": [list(row) for row in R],
        "n_experiences": len(R),
        "trainable_parameters": max((p for p in per_exp if p is not None), default=None),
        "stored_parameters": efficiency.get("stored_parameters"),
        "vit_passes_per_image": efficiency.get("vit_passes_per_image_last"),
        "train_images_per_s": efficiency.get("train_images_per_s_median"),
        "eval_images_per_s": efficiency.get("eval_images_per_s_last"),
        "peak_memory_mb": memory,
        "wall_seconds": efficiency.get("wall_seconds"),
        "source": source,
    }


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    return frame.sort_values(["bench", "strategy", "seed", "run"], kind="stable").reset_index(drop=True)


def load_local_runs(root: str | Path, *, statuses: Iterable[str] = ("finished",)) -> pd.DataFrame:
    """Every ``record.json`` under ``root`` whose status is in ``statuses``."""
    wanted = set(statuses)
    rows = []
    for path in sorted(Path(root).expanduser().rglob(RECORD_FILE)):
        data = json.loads(path.read_text())
        if data.get("status") not in wanted or not data.get("R"):
            continue
        rows.append(_row(
            run=data.get("run_name", path.parent.name), config=data["config"], summary=data["metrics"] or {},
            R=data["R"], status=data["status"], group=data.get("group"),
            classes=data["classes_per_experience"], efficiency=data.get("efficiency") or {}, source=str(path.parent),
        ))
    return _frame(rows)


def runs_from_wandb_objects(runs: Iterable[Any], *, states: Iterable[str] = ("finished",)) -> pd.DataFrame:
    """Rows from W&B API run objects (anything with ``.config``, ``.summary``, ``.name``,
    ``.group``, ``.state``); the run's summary holds what ``cl_bench.tracking`` logged."""
    wanted = set(states)
    rows = []
    for run in runs:
        summary = dict(run.summary)
        if run.state not in wanted or "R" not in summary:
            continue
        efficiency = {k.split("/", 1)[1]: v for k, v in summary.items() if k.startswith("efficiency/")}
        rows.append(_row(
            run=run.name, config=dict(run.config), summary=summary, R=summary["R"], status="finished",
            group=run.group, classes=summary.get("classes_per_experience") or [], efficiency=efficiency,
            source=f"wandb:{getattr(run, 'path', run.name)}",
        ))
    return _frame(rows)


def load_wandb_runs(project: str, *, entity: str | None = None, sweep: str | None = None,
                    group: str | None = None, filters: dict[str, Any] | None = None) -> pd.DataFrame:
    """Runs of a W&B project (needs network and an API key), filtered by sweep, group or W&B filters."""
    import wandb

    api = wandb.Api(timeout=30)
    path = f"{entity}/{project}" if entity else project
    query = dict(filters or {})
    if group:
        query["group"] = group
    if sweep:
        query["sweep"] = sweep
    return runs_from_wandb_objects(api.runs(path, filters=query or None))


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, int]:
    """Mean, half-width of the Student-t confidence interval, and n (half-width NaN for n < 2)."""
    x = np.asarray([v for v in values if v is not None and not pd.isna(v)], dtype=float)
    n = len(x)
    if n == 0:
        return float("nan"), float("nan"), 0
    if n == 1:
        return float(x[0]), float("nan"), 1
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * x.std(ddof=1) / np.sqrt(n)
    return float(x.mean()), float(half), n


def format_mean_ci(mean: float, half: float, scale: float = 100.0) -> str:
    if pd.isna(mean):
        return "n/a"
    return f"{scale * mean:.2f}" if pd.isna(half) else f"{scale * mean:.2f} ± {scale * half:.2f}"


def summary_table(runs: pd.DataFrame, metrics: Sequence[str] = METRICS, confidence: float = 0.95) -> pd.DataFrame:
    """Per (bench, split, strategy): seeds, and mean and CI half-width of each metric."""
    rows = []
    for (bench, split, strategy), group in runs.groupby(["bench", "split", "strategy"], sort=True):
        row = {"bench": bench, "split": split, "strategy": strategy, "n_seeds": group["seed"].nunique()}
        for metric in metrics:
            mean, half, _ = mean_ci(group[metric].tolist(), confidence)
            row[metric], row[f"{metric}_ci"] = mean, half
        rows.append(row)
    return pd.DataFrame(rows)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, (m - rank) * p[index])
        adjusted[index] = min(running, 1.0)
    return adjusted.tolist()


def paired_tests(runs: pd.DataFrame, metric: str = "last_accuracy") -> pd.DataFrame:
    """Every pair of strategies on the same bench and split, over the seeds both ran: paired t-test
    and Wilcoxon signed-rank, with Holm correction across the pairs of each bench and split."""
    rows = []
    for (bench, split), group in runs.groupby(["bench", "split"], sort=True):
        by_seed = group.pivot_table(index="seed", columns="strategy", values=metric, aggfunc="mean")
        block = []
        for a, b in combinations(sorted(by_seed.columns), 2):
            pair = by_seed[[a, b]].dropna()
            n = len(pair)
            diff = pair[a] - pair[b]
            t_p = stats.ttest_rel(pair[a], pair[b]).pvalue if n >= 2 and diff.std() > 0 else float("nan")
            w_p = stats.wilcoxon(pair[a], pair[b]).pvalue if n >= 2 and (diff != 0).any() else float("nan")
            block.append({"bench": bench, "split": split, "a": a, "b": b, "n_seeds": n,
                          "mean_difference": float(diff.mean()) if n else float("nan"),
                          "t_test_p": float(t_p), "wilcoxon_p": float(w_p)})
        for test in ("t_test_p", "wilcoxon_p"):
            valid = [i for i, r in enumerate(block) if not pd.isna(r[test])]
            for i, adjusted in zip(valid, holm([block[i][test] for i in valid])):
                block[i][f"{test}_holm"] = adjusted
        rows += block
    columns = ["bench", "split", "a", "b", "n_seeds", "mean_difference", "t_test_p", "t_test_p_holm", "wilcoxon_p", "wilcoxon_p_holm"]
    return pd.DataFrame(rows, columns=columns)


def curves_long(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, experience) with its ``A_t``."""
    rows = [
        {"run": r.run, "strategy": r.strategy, "bench": r.bench, "split": r.split, "seed": r.seed,
         "experience": t, "accuracy": a}
        for r in runs.itertuples() for t, a in enumerate(r.accuracy_curve)
    ]
    return pd.DataFrame(rows, columns=["run", "strategy", "bench", "split", "seed", "experience", "accuracy"])


def mean_accuracy_matrix(runs: pd.DataFrame) -> list[list[float]]:
    """The element-wise mean ``R`` of runs with the same split."""
    matrices = [r for r in runs["R"]]
    T = len(matrices[0])
    return [[float(np.mean([m[t][i] for m in matrices])) for i in range(t + 1)] for t in range(T)]


def efficiency_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Medians over seeds of the efficiency figures each run recorded."""
    return (runs.groupby(["bench", "split", "strategy"], sort=True)[list(EFFICIENCY)]
            .median(numeric_only=True).reset_index())


# -- reproduction ledgers -------------------------------------------------------------------------
def load_ledgers(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Paper numbers and ours from the ledgers' YAML data; ours stay None until a command ran them."""
    import yaml

    rows = []
    for path in paths:
        for entry in yaml.safe_load(Path(path).read_text())["entries"]:
            rows.append({
                "strategy": entry["strategy"], "bench": entry["bench"], "split": entry["split"],
                "paper_last": entry["paper"].get("last"), "paper_avg": entry["paper"].get("avg"),
                "paper_source": entry["paper"].get("source"),
                "ours_last": (entry.get("ours") or {}).get("last"), "ours_avg": (entry.get("ours") or {}).get("avg"),
                "ours_seeds": (entry.get("ours") or {}).get("seeds"), "command": entry["command"],
            })
    return pd.DataFrame(rows)


def ledger_table(ledger: pd.DataFrame) -> pd.DataFrame:
    """Display form: numbers as text, and 'not yet run (needs a GPU)' where we have none."""
    def ours(row, key):
        value = row[f"ours_{key}"]
        return "not yet run (needs a GPU)" if value is None or pd.isna(value) else f"{value:.2f}"

    return pd.DataFrame({
        "method": ledger["strategy"], "bench": ledger["bench"], "split": ledger["split"],
        "paper Last": ledger["paper_last"].map(lambda v: "n/a" if pd.isna(v) else f"{v:.2f}"),
        "paper Avg": ledger["paper_avg"].map(lambda v: "n/a" if pd.isna(v) else f"{v:.2f}"),
        "ours Last": [ours(r, "last") for _, r in ledger.iterrows()],
        "ours Avg": [ours(r, "avg") for _, r in ledger.iterrows()],
        "paper source": ledger["paper_source"],
    })


def ledger_markdown(path: str | Path) -> str:
    """The ledger YAML as the Markdown table its README shows (tests keep the two in step)."""
    table = ledger_table(load_ledgers([path]))
    ledger = load_ledgers([path])
    lines = ["| method | bench | split | paper Last | paper Avg | ours Last | ours Avg | command |",
             "|---|---|---|---|---|---|---|---|"]
    for (_, shown), (_, raw) in zip(table.iterrows(), ledger.iterrows()):
        lines.append(f"| {shown['method']} | {shown['bench']} | {shown['split']} | {shown['paper Last']} | "
                     f"{shown['paper Avg']} | {shown['ours Last']} | {shown['ours Avg']} | `{raw['command']}` |")
    return "\n".join(lines)
