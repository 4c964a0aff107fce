"""Runs to tables: one tidy pandas table from local run records or from W&B, confidence intervals,
paired significance tests and the efficiency table. The notebooks and ``sweeps/report.py`` call
these functions; nothing here trains.

Both loaders give the same columns, one row per run; list-valued columns hold the ``A_t`` curve
and the ``R`` matrix. Runs aggregate over seeds by ``method``: the strategy's name, made unique
when one table holds several configurations (W&B groups) of one strategy on one bench, so
different hyper-parameters are never averaged together.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from itertools import combinations
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from cl_bench.record import RECORD_FILE, RECORD_FORMAT

__all__ = [
    "RUN_COLUMNS",
    "METRICS",
    "EFFICIENCY",
    "CONFIDENCE",
    "load_local_runs",
    "load_wandb_runs",
    "runs_from_wandb_objects",
    "load_runs",
    "load_runs_from_environment",
    "mean_ci",
    "format_mean_ci",
    "summary_table",
    "summary_display",
    "holm",
    "paired_tests",
    "paired_display",
    "curves_long",
    "curve_summary",
    "mean_accuracy_matrix",
    "efficiency_table",
    "efficiency_display",
    "split_name",
    "ledger_paths",
    "load_ledgers",
    "ledger_table",
    "ledger_markdown",
    "reproduction_table",
    "markdown_table",
    "slug",
    "METRIC_LABELS",
    "NOT_YET_RUN",
    "NOT_IN_THESE_RUNS",
]

#: Default confidence level of every interval (Student t over seeds).
CONFIDENCE = 0.95
METRICS = ("last_accuracy", "avg_accuracy", "forgetting", "bwt")
METRIC_LABELS = {"last_accuracy": "Last (%)", "avg_accuracy": "Avg (%)", "forgetting": "forgetting (pp)", "bwt": "BWT (pp)"}
EFFICIENCY = (
    "trainable_parameters", "stored_parameters", "vit_passes_per_image", "block_passes_per_image",
    "train_images_per_s", "eval_images_per_s", "eval_harness_speedup", "peak_memory_mb", "wall_seconds",
)
RUN_COLUMNS = (
    "run", "strategy", "method", "bench", "split", "seed", "group", "status", "backbone", "preset",
    *METRICS, "accuracy_curve", "R", "n_experiences", *EFFICIENCY, "memory_kind", "source",
)
#: Accuracies are fractions in runs and percent in every displayed table.
PERCENT = 100.0
#: Text shown where a number does not exist; never a number in its place.
NOT_YET_RUN = "not yet run (needs a GPU)"
NOT_IN_THESE_RUNS = "not yet run (not in these runs)"

#: Environment variables the notebooks read to find their runs.
RUNS_ENV = "CL_BENCH_RUNS"
WANDB_PROJECT_ENV = "CL_BENCH_WANDB_PROJECT"
WANDB_ENTITY_ENV = "CL_BENCH_WANDB_ENTITY"
WANDB_SWEEP_ENV = "CL_BENCH_WANDB_SWEEP"
WANDB_GROUP_ENV = "CL_BENCH_WANDB_GROUP"
DEFAULT_RUNS_DIR = "runs"
WANDB_API_TIMEOUT_S = 30

#: Memory columns of a run's efficiency summary, most relevant first.
_MEMORY_KEYS = (("peak_cuda_allocated_mb", "CUDA allocated"), ("peak_rss_mb", "CPU RSS"))
_GROUP_KEYS = ["bench", "split", "method"]


def split_name(classes_per_experience: Sequence[int]) -> str:
    """``B{init}-{inc}-{T}``, the ledgers' name of a class split."""
    sizes = list(classes_per_experience)
    if not sizes:
        raise ValueError("a split needs at least one experience")
    inc = sizes[1] if len(sizes) > 1 else sizes[0]
    return f"B{sizes[0]}-{inc}-{len(sizes)}"


# -- loading ----------------------------------------------------------------------------------------
def _row(*, run: str, config: Mapping[str, Any], summary: Mapping[str, Any], R: list, status: str,
         group: str | None, classes: Sequence[int], efficiency: Mapping[str, Any], source: str) -> dict[str, Any]:
    memory_key, memory_kind = next(((k, kind) for k, kind in _MEMORY_KEYS if efficiency.get(k) is not None), (None, None))
    per_experience = [p for p in efficiency.get("trainable_parameters_per_experience") or [] if p is not None]
    return {
        "run": run,
        "strategy": config.get("strategy"),
        "method": config.get("strategy"),
        "bench": config.get("bench"),
        "split": split_name(classes) if classes else None,
        "seed": config.get("seed"),
        "group": group,
        "status": status,
        "backbone": config.get("backbone"),
        "preset": config.get("preset"),
        **{m: summary.get(m) for m in METRICS},
        "accuracy_curve": [float(a) for a in summary.get("accuracy_curve") or []],
        "R": [[float(a) for a in row] for row in R],
        "n_experiences": len(R),
        "trainable_parameters": max(per_experience, default=None),  # the largest over the stream (it may grow)
        "stored_parameters": efficiency.get("stored_parameters"),
        "vit_passes_per_image": efficiency.get("vit_passes_per_image_last"),
        "block_passes_per_image": efficiency.get("block_passes_per_image_last"),
        "train_images_per_s": efficiency.get("train_images_per_s_median"),
        "eval_images_per_s": efficiency.get("eval_images_per_s_last"),  # every test image new (no harness cache)
        "eval_harness_speedup": efficiency.get("harness_eval_speedup_last"),  # the query cache's, in this harness
        "peak_memory_mb": efficiency.get(memory_key) if memory_key else None,
        "wall_seconds": efficiency.get("wall_seconds"),
        "memory_kind": memory_kind,
        "source": source,
    }


def _method_labels(frame: pd.DataFrame) -> pd.Series:
    """The strategy name, or ``strategy [preset]`` / ``strategy [group]`` where one bench and split
    holds several configurations of the strategy."""
    labels = frame["strategy"].astype(object).copy()
    for _, block in frame.groupby(["bench", "split", "strategy"], dropna=False, sort=False):
        configurations = block.drop_duplicates("group")
        if len(configurations) < 2:
            continue
        presets_tell_apart = (configurations["preset"].notna().all() and configurations["preset"].is_unique
                              and block.groupby("group", dropna=False)["preset"].nunique().max() == 1)
        suffix = block["preset"] if presets_tell_apart else block["group"]
        labels[block.index] = [f"{s} [{x}]" for s, x in zip(block["strategy"], suffix)]
    return labels


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    for column in (*METRICS, *EFFICIENCY):  # None -> NaN, so medians and means never drop a column
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    if not frame.empty:
        frame["method"] = _method_labels(frame)
    return frame.sort_values(["bench", "method", "seed", "run"], kind="stable").reset_index(drop=True)


def load_local_runs(root: str | Path, *, statuses: Iterable[str] = ("finished",)) -> pd.DataFrame:
    """Every run record under ``root`` whose status is in ``statuses``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"no runs directory {root}")
    wanted = set(statuses)
    rows = []
    for path in sorted(root.rglob(RECORD_FILE)):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            warnings.warn(f"skipping unreadable run record {path}: {error}", stacklevel=2)
            continue
        if data.get("format") != RECORD_FORMAT or data.get("status") not in wanted or not data.get("R"):
            continue
        rows.append(_row(
            run=data.get("run_name", path.parent.name), config=data["config"], summary=data.get("metrics") or {},
            R=data["R"], status=data["status"], group=data.get("group"),
            classes=data.get("classes_per_experience") or [], efficiency=data.get("efficiency") or {},
            source=str(path.parent),
        ))
    return _frame(rows)


def runs_from_wandb_objects(runs: Iterable[Any], *, states: Iterable[str] = ("finished",)) -> pd.DataFrame:
    """Rows from W&B API run objects (anything with ``.config``, ``.summary``, ``.name``,
    ``.group``, ``.state``); the run's summary holds what ``cl_bench.tracking`` logged."""
    wanted = set(states)
    rows = []
    for run in runs:
        if run.state not in wanted:
            continue
        summary = {key: run.summary[key] for key in run.summary.keys()}
        if "R" not in summary:
            continue
        efficiency = {k.split("/", 1)[1]: v for k, v in summary.items() if k.startswith("efficiency/")}
        path = getattr(run, "path", None)
        rows.append(_row(
            run=run.name, config=dict(run.config), summary=summary, R=summary["R"], status=run.state,
            group=run.group, classes=summary.get("classes_per_experience") or [], efficiency=efficiency,
            source="wandb:" + ("/".join(map(str, path)) if isinstance(path, (list, tuple)) else str(path or run.name)),
        ))
    return _frame(rows)


def load_wandb_runs(project: str, *, entity: str | None = None, sweep: str | None = None,
                    group: str | None = None, filters: dict[str, Any] | None = None) -> pd.DataFrame:
    """Runs of a W&B project (needs network and an API key), filtered by sweep, group or W&B filters."""
    import wandb

    api = wandb.Api(timeout=WANDB_API_TIMEOUT_S)
    path = f"{entity}/{project}" if entity else project
    query = dict(filters or {})
    if group:
        query["group"] = group
    if sweep:
        query["sweep"] = sweep.rstrip("/").rsplit("/", 1)[-1]  # accept a sweep id or its entity/project/id path
    return runs_from_wandb_objects(api.runs(path, filters=query or None))


def load_runs(runs_dir: str | Path = DEFAULT_RUNS_DIR, *, wandb_project: str | None = None, entity: str | None = None,
              sweep: str | None = None, group: str | None = None) -> tuple[pd.DataFrame, str]:
    """Runs from W&B when a project is named, else from the records under ``runs_dir``; and a
    one-line description of where they came from."""
    if wandb_project:
        where = "/".join(p for p in (entity, wandb_project) if p)
        filters = ", ".join(f"{k} {v}" for k, v in (("sweep", sweep), ("group", group)) if v)
        runs = load_wandb_runs(wandb_project, entity=entity, sweep=sweep, group=group)
        return runs, f"W&B project {where}" + (f" ({filters})" if filters else "")
    if sweep:
        raise ValueError("a sweep filter needs a W&B project")
    runs = load_local_runs(runs_dir)
    if group:
        runs = runs[runs["group"] == group].reset_index(drop=True)
    return runs, f"run records under {runs_dir}" + (f" (group {group})" if group else "")


def load_runs_from_environment(root: str | Path = ".", environ: Mapping[str, str] | None = None) -> tuple[pd.DataFrame, str]:
    """``load_runs`` configured by the ``CL_BENCH_*`` variables (how the notebooks are pointed at
    runs); a relative runs directory is taken from ``root``."""
    env = os.environ if environ is None else environ
    runs_dir = Path(env.get(RUNS_ENV) or DEFAULT_RUNS_DIR).expanduser()
    if not runs_dir.is_absolute():
        runs_dir = Path(root) / runs_dir
    return load_runs(runs_dir, wandb_project=env.get(WANDB_PROJECT_ENV) or None, entity=env.get(WANDB_ENTITY_ENV) or None,
                     sweep=env.get(WANDB_SWEEP_ENV) or None, group=env.get(WANDB_GROUP_ENV) or None)


# -- statistics -------------------------------------------------------------------------------------
def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, int]:
    """Mean, half-width of the Student-t confidence interval, and n (half-width NaN for n < 2)."""
    x = np.asarray([v for v in values if v is not None and not pd.isna(v)], dtype=float)
    n = len(x)
    if n == 0:
        return float("nan"), float("nan"), 0
    if n == 1:
        return float(x[0]), float("nan"), 1
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * x.std(ddof=1) / np.sqrt(n)
    return float(x.mean()), float(half), n


def format_mean_ci(mean: float, half: float, scale: float = PERCENT) -> str:
    """``mean ± half`` scaled (percent by default); no ``±`` part when there is no interval."""
    if pd.isna(mean):
        return "n/a"
    return f"{scale * mean:.2f}" if pd.isna(half) else f"{scale * mean:.2f} ± {scale * half:.2f}"


def _per_seed(block: pd.DataFrame, column: str) -> pd.Series:
    """One value per seed (the mean of repeated runs of a seed), so seeds are the unit of the CI."""
    return block.groupby("seed")[column].mean()


def summary_table(runs: pd.DataFrame, metrics: Sequence[str] = METRICS, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Per (bench, split, method): seeds, and mean and CI half-width over seeds of each metric."""
    rows = []
    for (bench, split, method), block in runs.groupby(_GROUP_KEYS, sort=True, dropna=False):
        row = {"bench": bench, "split": split, "method": method, "strategy": block["strategy"].iloc[0],
               "n_seeds": block["seed"].nunique(), "n_runs": len(block)}
        for metric in metrics:
            mean, half, _ = mean_ci(_per_seed(block, metric).tolist(), confidence)
            row[metric], row[f"{metric}_ci"] = mean, half
        rows.append(row)
    columns = ["bench", "split", "method", "strategy", "n_seeds", "n_runs", *(c for m in metrics for c in (m, f"{m}_ci"))]
    return pd.DataFrame(rows, columns=columns)


def summary_display(summary: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """``summary_table`` as text: each metric as ``mean ± CI`` in percent (points for forgetting/BWT)."""
    level = f"{100 * confidence:g}%"
    shown = summary[["bench", "split", "method", "n_seeds"]].rename(columns={"n_seeds": "seeds"}).copy()
    for metric in METRICS:
        if metric in summary:
            shown[f"{METRIC_LABELS[metric]}, ± {level} CI"] = [
                format_mean_ci(m, h) for m, h in zip(summary[metric], summary[f"{metric}_ci"])]
    return shown.reset_index(drop=True)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaN stays NaN and does
    not count as a hypothesis."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(len(p), np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    running = 0.0
    for rank, index in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, (m - rank) * p[index])
        adjusted[index] = min(running, 1.0)
    return adjusted.tolist()


PAIRED_COLUMNS = ["bench", "split", "a", "b", "n_seeds", "mean_difference", "t_statistic", "t_test_p", "t_test_p_holm",
                  "wilcoxon_statistic", "wilcoxon_p", "wilcoxon_p_holm"]


def _paired(a: pd.Series, b: pd.Series) -> dict[str, float]:
    """Paired t-test and Wilcoxon signed-rank of ``a - b``; NaN where a test is undefined (fewer
    than two seeds, all differences equal for t, all zero for Wilcoxon)."""
    nan = float("nan")
    diff = a - b
    result = {"t_statistic": nan, "t_test_p": nan, "wilcoxon_statistic": nan, "wilcoxon_p": nan}
    if len(diff) < 2:
        return result
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # tiny samples: scipy warns, the numbers stand
        warnings.simplefilter("ignore", UserWarning)
        if diff.std(ddof=1) > 0:
            t = stats.ttest_rel(a, b)
            result.update(t_statistic=float(t.statistic), t_test_p=float(t.pvalue))
        if (diff != 0).any():
            w = stats.wilcoxon(a, b)
            result.update(wilcoxon_statistic=float(w.statistic), wilcoxon_p=float(w.pvalue))
    return result


def paired_tests(runs: pd.DataFrame, metric: str = "last_accuracy") -> pd.DataFrame:
    """Every pair of methods on the same bench and split, over the seeds both ran: paired t-test
    and Wilcoxon signed-rank of ``a - b``, Holm-corrected across the pairs of each bench and split."""
    rows = []
    for (bench, split), group in runs.groupby(["bench", "split"], sort=True, dropna=False):
        by_seed = group.pivot_table(index="seed", columns="method", values=metric, aggfunc="mean")
        block = []
        for a, b in combinations(sorted(by_seed.columns), 2):
            pair = by_seed[[a, b]].dropna()
            block.append({"bench": bench, "split": split, "a": a, "b": b, "n_seeds": len(pair),
                          "mean_difference": float((pair[a] - pair[b]).mean()) if len(pair) else float("nan"),
                          **_paired(pair[a], pair[b])})
        for test in ("t_test_p", "wilcoxon_p"):
            for row, adjusted in zip(block, holm([row[test] for row in block])):
                row[f"{test}_holm"] = adjusted
        rows += block
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def _format_p(p: float) -> str:
    return "n/a" if pd.isna(p) else f"{p:.3g}"


def paired_display(tests: pd.DataFrame) -> pd.DataFrame:
    """``paired_tests`` as text (difference in percentage points, p-values to 3 digits)."""
    return pd.DataFrame({
        "bench": tests["bench"], "split": tests["split"], "A": tests["a"], "B": tests["b"], "seeds": tests["n_seeds"],
        "A − B (pp)": tests["mean_difference"].map(lambda d: "n/a" if pd.isna(d) else f"{PERCENT * d:+.2f}"),
        "t": tests["t_statistic"].map(lambda s: "n/a" if pd.isna(s) else f"{s:.3f}"),
        "t-test p": tests["t_test_p"].map(_format_p), "t-test p (Holm)": tests["t_test_p_holm"].map(_format_p),
        "W": tests["wilcoxon_statistic"].map(lambda s: "n/a" if pd.isna(s) else f"{s:g}"),
        "Wilcoxon p": tests["wilcoxon_p"].map(_format_p), "Wilcoxon p (Holm)": tests["wilcoxon_p_holm"].map(_format_p),
    }).reset_index(drop=True)


# -- curves and matrices ----------------------------------------------------------------------------
def curves_long(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, experience) with its ``A_t``."""
    rows = [
        {"run": r.run, "strategy": r.strategy, "method": r.method, "bench": r.bench, "split": r.split,
         "seed": r.seed, "experience": t, "accuracy": a}
        for r in runs.itertuples() for t, a in enumerate(r.accuracy_curve)
    ]
    return pd.DataFrame(rows, columns=["run", "strategy", "method", "bench", "split", "seed", "experience", "accuracy"])


def curve_summary(runs: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Per (bench, split, method, experience): mean ``A_t`` over seeds, CI half-width and seeds."""
    rows = []
    long = curves_long(runs)
    for (bench, split, method, t), block in long.groupby([*_GROUP_KEYS, "experience"], sort=True, dropna=False):
        mean, half, n = mean_ci(_per_seed(block, "accuracy").tolist(), confidence)
        rows.append({"bench": bench, "split": split, "method": method, "experience": t,
                     "mean": mean, "ci": half, "n_seeds": n})
    return pd.DataFrame(rows, columns=["bench", "split", "method", "experience", "mean", "ci", "n_seeds"])


def mean_accuracy_matrix(runs: pd.DataFrame) -> list[list[float]]:
    """The element-wise mean ``R`` of runs with the same split."""
    matrices = list(runs["R"])
    if not matrices:
        raise ValueError("no runs to average")
    if len({len(m) for m in matrices}) != 1:
        raise ValueError("runs of different lengths have no common accuracy matrix; select one split")
    T = len(matrices[0])
    return [[float(np.mean([m[t][i] for m in matrices])) for i in range(t + 1)] for t in range(T)]


def efficiency_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Medians over runs of the efficiency figures each run recorded, per (bench, split, method)."""
    grouped = runs.groupby(_GROUP_KEYS, sort=True, dropna=False)
    table = grouped[list(EFFICIENCY)].median()
    table.insert(0, "n_runs", grouped.size())
    table["memory_kind"] = grouped["memory_kind"].agg(lambda kinds: ", ".join(sorted(set(kinds.dropna()))) or None)
    return table.reset_index()


def _format_count(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{int(round(value)):,}"


def _format_float(digits: int):
    return lambda value: "n/a" if pd.isna(value) else f"{value:.{digits}f}"


def efficiency_display(table: pd.DataFrame) -> pd.DataFrame:
    """``efficiency_table`` as text; memory says whether it is CUDA allocated or CPU RSS."""
    memory = [("n/a" if pd.isna(mb) else f"{mb:.0f}" + (f" ({kind})" if kind else ""))
              for mb, kind in zip(table["peak_memory_mb"], table["memory_kind"])]
    return pd.DataFrame({
        "bench": table["bench"], "split": table["split"], "method": table["method"], "runs": table["n_runs"],
        "trainable params": table["trainable_parameters"].map(_format_count),
        "stored params": table["stored_parameters"].map(_format_count),
        "ViT passes / test image": table["vit_passes_per_image"].map(_format_float(2)),
        "block passes / test image": table["block_passes_per_image"].map(_format_float(1)),
        "train images/s": table["train_images_per_s"].map(_format_float(0)),
        "test images/s": table["eval_images_per_s"].map(_format_float(0)),
        "peak memory (MB)": memory,
        "wall time (s)": table["wall_seconds"].map(_format_float(0)),
    }).reset_index(drop=True)


# -- reproduction ledgers -------------------------------------------------------------------------
def ledger_paths(root: str | Path = ".") -> list[Path]:
    """The ledgers of a checkout: one per reproduced strategy, and the baselines'."""
    root = Path(root)
    return [*sorted(root.glob("strategies/*/ledger.yaml")), *sorted(root.glob("baselines/ledger.yaml"))]


def load_ledgers(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Paper numbers and ours from the ledgers' YAML data; ours stay None until a command ran them."""
    import yaml

    rows = []
    for path in paths:
        for entry in yaml.safe_load(Path(path).read_text())["entries"]:
            ours = entry.get("ours") or {}
            rows.append({
                "strategy": entry["strategy"], "bench": entry["bench"], "split": entry["split"],
                "paper_last": entry["paper"].get("last"), "paper_avg": entry["paper"].get("avg"),
                "paper_source": entry["paper"].get("source"),
                "ours_last": ours.get("last"), "ours_avg": ours.get("avg"), "ours_seeds": ours.get("seeds"),
                "command": entry["command"],
            })
    return pd.DataFrame(rows, columns=["strategy", "bench", "split", "paper_last", "paper_avg", "paper_source",
                                       "ours_last", "ours_avg", "ours_seeds", "command"])


def _number_or(text: str):
    return lambda value: text if value is None or pd.isna(value) else f"{value:.2f}"


def ledger_table(ledger: pd.DataFrame) -> pd.DataFrame:
    """Display form: numbers as text, and 'not yet run (needs a GPU)' where we have none."""
    return pd.DataFrame({
        "method": ledger["strategy"], "bench": ledger["bench"], "split": ledger["split"],
        "paper Last": ledger["paper_last"].map(_number_or("n/a")),
        "paper Avg": ledger["paper_avg"].map(_number_or("n/a")),
        "ours Last": ledger["ours_last"].map(_number_or(NOT_YET_RUN)),
        "ours Avg": ledger["ours_avg"].map(_number_or(NOT_YET_RUN)),
        "paper source": ledger["paper_source"],
    })


def ledger_markdown(path: str | Path) -> str:
    """The ledger YAML as the Markdown table its README shows (tests keep the two in step)."""
    ledger = load_ledgers([path])
    table = ledger_table(ledger)
    lines = ["| method | bench | split | paper Last | paper Avg | ours Last | ours Avg | command |",
             "|---|---|---|---|---|---|---|---|"]
    for (_, shown), command in zip(table.iterrows(), ledger["command"]):
        lines.append(f"| {shown['method']} | {shown['bench']} | {shown['split']} | {shown['paper Last']} | "
                     f"{shown['paper Avg']} | {shown['ours Last']} | {shown['ours Avg']} | `{command}` |")
    return "\n".join(lines)


def reproduction_table(ledger: pd.DataFrame, runs: pd.DataFrame | None = None,
                       confidence: float = CONFIDENCE) -> pd.DataFrame:
    """``ledger_table`` plus, per entry, the loaded runs of that strategy, bench and split
    (mean ± CI over seeds, in percent like the paper) or 'not yet run' text where there are none."""
    table = ledger_table(ledger)
    summary = summary_table(runs, confidence=confidence) if runs is not None and not runs.empty else None
    loaded: dict[str, list[str]] = {"loaded runs Last": [], "loaded runs Avg": [], "loaded seeds": []}
    for entry in ledger.itertuples():
        match = None
        if summary is not None:
            match = summary[(summary["strategy"] == entry.strategy) & (summary["bench"] == entry.bench)
                            & (summary["split"] == entry.split)]
        if match is None or match.empty:
            loaded["loaded runs Last"].append(NOT_IN_THESE_RUNS)
            loaded["loaded runs Avg"].append(NOT_IN_THESE_RUNS)
            loaded["loaded seeds"].append("0")
            continue
        rows = list(match.itertuples())  # several rows when several configurations ran
        loaded["loaded runs Last"].append("; ".join(format_mean_ci(r.last_accuracy, r.last_accuracy_ci) for r in rows))
        loaded["loaded runs Avg"].append("; ".join(format_mean_ci(r.avg_accuracy, r.avg_accuracy_ci) for r in rows))
        loaded["loaded seeds"].append("; ".join(str(r.n_seeds) for r in rows))
    for column, values in loaded.items():
        table.insert(len(table.columns) - 1, column, values)
    return table


# -- Markdown ---------------------------------------------------------------------------------------
def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table of ``frame`` as shown (cells as text, pipes escaped)."""
    def cell(value: Any) -> str:
        text = "" if value is None or (not isinstance(value, (list, tuple)) and pd.isna(value)) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def slug(text: str) -> str:
    """A file-name-safe form of a bench, split or method label."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "x"
