"""Runs to tables: one tidy pandas table from local run records or from W&B, confidence intervals,
paired significance tests and the efficiency table. The notebooks and ``sweeps/report.py`` call
these functions; nothing here trains.

Both loaders give the same columns, one row per run; list-valued columns hold the ``A_t`` curve
and the ``R`` matrix, ``config`` the run's configuration without its seed and without the keys
that cannot change results. Runs aggregate over seeds by ``method``: the strategy's name, plus the
config keys that tell its configurations apart on one bench (``cl_lora (epochs=1)``), so different
hyper-parameters are never averaged together. ``select_runs`` picks the run set a user compares.
"""

from __future__ import annotations

import fnmatch
import functools
import glob
import json
import os
import re
import shlex
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
    "select_runs",
    "run_sets",
    "label_methods",
    "ledger_config",
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
    "split_sizes_of",
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
    "run", "strategy", "method", "bench", "split", "seed", "group", "config", "protocol", "status", "backbone", "preset",
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
WANDB_FILTERS_ENV = "CL_BENCH_WANDB_FILTERS"
WHERE_ENV = "CL_BENCH_WHERE"
DEFAULT_RUNS_DIR = "runs"
WANDB_API_TIMEOUT_S = 30

#: Memory columns of a run's efficiency summary, most relevant first.
_MEMORY_KEYS = (("peak_cuda_allocated_mb", "CUDA allocated"), ("peak_rss_mb", "CPU RSS"))
_GROUP_KEYS = ["bench", "split", "method"]
#: Run keys that define the evaluation protocol besides the bench's own keys: runs that differ in
#: one of them are not paired in significance tests.
PROTOCOL_RUN_KEYS = ("class_order_seed", "class_order_from_seed", "backbone", "pretrained", "pretrained_file")
#: Columns ``--where`` can name besides the config keys.
SELECTABLE_COLUMNS = ("run", "strategy", "method", "bench", "split", "seed", "group", "preset", "backbone", "status")


def split_name(classes_per_experience: Sequence[int]) -> str:
    """``B{init}-{inc}-{T}``, the ledgers' name of a class split."""
    sizes = list(classes_per_experience)
    if not sizes:
        raise ValueError("a split needs at least one experience")
    inc = sizes[1] if len(sizes) > 1 else sizes[0]
    return f"B{sizes[0]}-{inc}-{len(sizes)}"


# -- loading ----------------------------------------------------------------------------------------
@functools.cache
def _section_keys() -> tuple[frozenset[str], dict[str, frozenset[str]]]:
    """Keys no result depends on (paths, devices, tracking), and each registered bench's own
    result-changing keys; read from the typed config sections, so they never drift (of the names
    registered when first asked: entry points import ``cl_bench.catalog``)."""
    import dataclasses

    from cl_bench.config import RunConfig
    from cl_bench.registry import BENCHES, STRATEGIES

    sections = [RunConfig, *(getattr(e, "config_cls", None) for _, e in (*BENCHES.items(), *STRATEGIES.items()))]
    ignored = frozenset(f.name for cls in sections if cls is not None for f in dataclasses.fields(cls)
                        if not f.metadata.get("semantic", True))
    bench_keys = {name: frozenset(f.name for f in dataclasses.fields(entry.config_cls) if f.metadata.get("semantic", True))
                  for name, entry in BENCHES.items()}
    return ignored, bench_keys


def _comparable_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration a group of seeds shares: every key that can change results except the seed
    (JSON-normalised, so a local record and its W&B copy give the same dict)."""
    ignored, _ = _section_keys()
    kept = {k: v for k, v in config.items() if k not in ignored and k != "seed"}
    return json.loads(json.dumps(kept, sort_keys=True, default=str))


def _protocol(bench: str | None, split: str | None, config: Mapping[str, Any]) -> str:
    """The evaluation protocol as a key: bench, split, class order, backbone and the bench's keys."""
    _, bench_keys = _section_keys()
    keys = sorted({*PROTOCOL_RUN_KEYS, *bench_keys.get(bench, ())})
    return json.dumps({"bench": bench, "split": split, **{k: config.get(k) for k in keys}}, sort_keys=True, default=str)


def _row(*, run: str, config: Mapping[str, Any], summary: Mapping[str, Any], R: list, status: str,
         group: str | None, classes: Sequence[int], efficiency: Mapping[str, Any], source: str,
         semantic: Mapping[str, Any] | None = None) -> dict[str, Any]:
    memory_key, memory_kind = next(((k, kind) for k, kind in _MEMORY_KEYS if efficiency.get(k) is not None), (None, None))
    per_experience = [p for p in efficiency.get("trainable_parameters_per_experience") or [] if p is not None]
    comparable = _comparable_config(semantic if semantic else config)
    split = split_name(classes) if classes else None
    return {
        "run": run,
        "strategy": config.get("strategy"),
        "method": config.get("strategy"),
        "bench": config.get("bench"),
        "split": split,
        "seed": config.get("seed"),
        "group": group,
        "config": comparable,
        "protocol": _protocol(config.get("bench"), split, comparable),
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


def _config_key(config: Mapping[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str, separators=(",", ":"))


def _varying_keys(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    keys = sorted({k for c in configs for k in c})
    return [k for k in keys if len({_config_key({"v": c.get(k)}) for c in configs}) > 1]


def _label_keys(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The keys that tell ``configs`` apart. When presets differ, the preset stands for the values it
    sets, so only keys that also vary between configurations of one preset are added to it."""
    varying = _varying_keys(configs)
    if "preset" not in varying:
        return varying
    within: set[str] = set()
    for preset in {c.get("preset") for c in configs}:
        within.update(_varying_keys([c for c in configs if c.get("preset") == preset]))
    return ["preset", *sorted(within - {"preset"})]


def label_methods(frame: pd.DataFrame) -> pd.Series:
    """One label per configuration of a strategy on a bench and split: the strategy's name, plus
    ``(key=value, ...)`` for the config keys that differ between its configurations there."""
    labels = frame["strategy"].astype(object).copy()
    keys = frame["config"].map(_config_key)
    for _, block in frame.groupby(["bench", "split", "strategy"], dropna=False, sort=False):
        distinct = {keys[i]: frame.at[i, "config"] for i in block.index}
        if len(distinct) < 2:
            continue
        shown = _label_keys(list(distinct.values()))
        for i in block.index:
            config = frame.at[i, "config"]
            labels[i] = f"{frame.at[i, 'strategy']} (" + ", ".join(f"{k}={_shown(config.get(k))}" for k in shown) + ")"
    return labels


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    for column in (*METRICS, *EFFICIENCY):  # None -> NaN, so medians and means never drop a column
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return _relabelled(frame)


def _relabelled(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reset_index(drop=True)
    if not frame.empty:
        frame["method"] = label_methods(frame)
    return frame.sort_values(["bench", "method", "seed", "run"], kind="stable").reset_index(drop=True)


def _record_paths(roots: str | Path | Sequence[str | Path]) -> list[Path]:
    """``record.json`` files under each root: a directory, or a glob of run directories such as
    ``runs/cl_lora-*``; a root that matches nothing is an error."""
    if isinstance(roots, (str, Path)):
        roots = [roots]
    paths: dict[Path, None] = {}
    for root in roots:
        text = os.path.expanduser(str(root))
        matches = sorted(glob.glob(text)) if glob.has_magic(text) else ([text] if Path(text).exists() else [])
        if not matches:
            raise FileNotFoundError(f"no runs directory {root}" if not glob.has_magic(text) else f"no runs match {root}")
        for match in map(Path, matches):
            found = [match] if match.name == RECORD_FILE else sorted(match.rglob(RECORD_FILE)) if match.is_dir() else []
            paths.update(dict.fromkeys(found))
    return list(paths)


def load_local_runs(root: str | Path | Sequence[str | Path], *, statuses: Iterable[str] = ("finished",)) -> pd.DataFrame:
    """Every run record under ``root`` (a directory, a glob of run directories, or a list of them)
    whose status is in ``statuses``."""
    wanted = set(statuses)
    rows = []
    for path in _record_paths(root):
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
            source=str(path.parent), semantic=data.get("config_semantic"),
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
    """Runs of a W&B project (needs network and an API key), filtered by sweep, group or W&B's own
    MongoDB-style ``filters`` (e.g. ``{"config.epochs": 3}``), applied on the server."""
    import wandb

    api = wandb.Api(timeout=WANDB_API_TIMEOUT_S)
    path = f"{entity}/{project}" if entity else project
    query = dict(filters or {})
    if group:
        query["group"] = group
    if sweep:
        query["sweep"] = sweep.rstrip("/").rsplit("/", 1)[-1]  # accept a sweep id or its entity/project/id path
    return runs_from_wandb_objects(api.runs(path, filters=query or None))


# -- choosing the run set -----------------------------------------------------------------------------
_WHERE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(!?=)(.*)$")


def _parse_where(term: str) -> tuple[str, bool, list[str]]:
    match = _WHERE.match(term)
    if not match:
        raise ValueError(f"--where {term!r}: give key=value, key=v1,v2 (any of) or key!=value")
    key, operator, values = match.groups()
    return key, operator == "=", [v.strip() for v in values.split(",")]


def _value_matches(actual: Any, wanted: str) -> bool:
    """A config value against the text a user typed: numbers by value, booleans as true/false."""
    if actual is None or (isinstance(actual, float) and np.isnan(actual)):
        return wanted.lower() in ("", "none", "null")
    if isinstance(actual, (bool, np.bool_)):
        return wanted.lower() in (("true", "1", "yes") if actual else ("false", "0", "no"))
    if isinstance(actual, (int, float, np.integer, np.floating)):
        try:
            return float(wanted) == float(actual)
        except ValueError:
            return False
    return fnmatch.fnmatchcase(_shown(actual), wanted)


def select_runs(runs: pd.DataFrame, where: Sequence[str] = (), *, run_names: Iterable[str] | None = None) -> pd.DataFrame:
    """The runs that satisfy every ``where`` term, relabelled within the selection.

    A term is ``key=value`` (``key=v1,v2``: any of them; ``key!=value``: none), where ``key`` is a
    config key (``epochs``, ``lr``, ...) or a column (``strategy``, ``seed``, ``run``, ``group``, ...);
    text values may be globs (``run=cl_lora-*``). ``run_names`` keeps only those runs."""
    keep = pd.Series(True, index=runs.index)
    if run_names is not None:
        keep &= runs["run"].isin(set(run_names))
    known = set(SELECTABLE_COLUMNS).union(*runs["config"]) if len(runs) else set(SELECTABLE_COLUMNS)
    for term in where:
        key, positive, values = _parse_where(term)
        if key not in known:
            raise ValueError(f"--where {term!r}: no run has a key '{key}'; keys: {', '.join(sorted(known))}")
        actual = runs[key] if key in SELECTABLE_COLUMNS else runs["config"].map(lambda c: c.get(key))
        hit = actual.map(lambda a: any(_value_matches(a, v) for v in values)).astype(bool)
        keep &= hit if positive else ~hit
    return _relabelled(runs[keep])


def run_sets(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per compared group (bench, split, method label): its seeds, runs and W&B groups."""
    rows = []
    for (bench, split, method), block in runs.groupby(_GROUP_KEYS, sort=True, dropna=False):
        rows.append({"bench": bench, "split": split, "method": method,
                     "seeds": ", ".join(str(s) for s in sorted(block["seed"].dropna().unique())),
                     "runs": len(block), "W&B group": ", ".join(sorted(set(block["group"].dropna())))})
    return pd.DataFrame(rows, columns=["bench", "split", "method", "seeds", "runs", "W&B group"])


def _describe_selection(where: Sequence[str]) -> str:
    return f", where {' and '.join(where)}" if where else ""


def load_runs(runs_dir: str | Path | Sequence[str | Path] = DEFAULT_RUNS_DIR, *, wandb_project: str | None = None,
              entity: str | None = None, sweep: str | None = None, group: str | None = None,
              wandb_filters: dict[str, Any] | None = None, where: Sequence[str] = ()) -> tuple[pd.DataFrame, str]:
    """Runs from W&B when a project is named, else from the records under ``runs_dir`` (directories
    or globs); then only those satisfying ``where`` (see ``select_runs``). Also a one-line
    description of where they came from and how they were chosen."""
    if wandb_project:
        where_from = "/".join(p for p in (entity, wandb_project) if p)
        filters = ", ".join(f"{k} {v}" for k, v in (("sweep", sweep), ("group", group)) if v)
        if wandb_filters:
            filters = ", ".join(p for p in (filters, f"filters {json.dumps(wandb_filters)}") if p)
        runs = load_wandb_runs(wandb_project, entity=entity, sweep=sweep, group=group, filters=wandb_filters)
        source = f"W&B project {where_from}" + (f" ({filters})" if filters else "")
    else:
        if sweep or wandb_filters:
            raise ValueError("a sweep or W&B filter needs a W&B project")
        runs = load_local_runs(runs_dir)
        if group:
            runs = select_runs(runs, [f"group={group}"])
        shown = runs_dir if isinstance(runs_dir, (str, Path)) else " ".join(map(str, runs_dir))
        source = f"run records under {shown}" + (f" (group {group})" if group else "")
    return select_runs(runs, where), source + _describe_selection(where)


def load_runs_from_environment(root: str | Path = ".", environ: Mapping[str, str] | None = None) -> tuple[pd.DataFrame, str]:
    """``load_runs`` configured by the ``CL_BENCH_*`` variables (how the notebooks are pointed at
    runs): ``CL_BENCH_RUNS`` directories or globs separated by ``os.pathsep``, relative to ``root``;
    ``CL_BENCH_WHERE`` terms separated by spaces; ``CL_BENCH_WANDB_FILTERS`` a JSON object."""
    env = os.environ if environ is None else environ
    runs_dirs = []
    for part in (env.get(RUNS_ENV) or DEFAULT_RUNS_DIR).split(os.pathsep):
        path = Path(part).expanduser()
        runs_dirs.append(path if path.is_absolute() else Path(root) / path)
    filters = env.get(WANDB_FILTERS_ENV) or None
    return load_runs(runs_dirs[0] if len(runs_dirs) == 1 else runs_dirs,
                     wandb_project=env.get(WANDB_PROJECT_ENV) or None, entity=env.get(WANDB_ENTITY_ENV) or None,
                     sweep=env.get(WANDB_SWEEP_ENV) or None, group=env.get(WANDB_GROUP_ENV) or None,
                     wandb_filters=json.loads(filters) if filters else None, where=shlex.split(env.get(WHERE_ENV) or ""))


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


#: Fewest seeds two methods must share for a paired test to be defined.
MIN_PAIRED_SEEDS = 2


def paired_tests(runs: pd.DataFrame, metric: str = "last_accuracy") -> pd.DataFrame:
    """Every pair of methods evaluated under one protocol (bench, split, class order, backbone and
    the bench's keys), over the seeds both ran: paired t-test and Wilcoxon signed-rank of ``a - b``,
    Holm-corrected across the pairs of each protocol. Runs of different protocols are never paired."""
    rows = []
    for (bench, split, _), group in runs.groupby(["bench", "split", "protocol"], sort=True, dropna=False):
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


def split_sizes_of(split: str) -> list[int] | None:
    """Classes per experience of a ``B{init}-{inc}-{T}`` split name (None for another name)."""
    match = re.fullmatch(r"B(\d+)-(\d+)-(\d+)", str(split))
    if not match:
        return None
    init, inc, T = map(int, match.groups())
    return [init] + [inc] * (T - 1)


def curve_summary(runs: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Per (bench, split, method, experience): mean ``A_t`` over seeds, CI half-width, seeds, and the
    chance accuracy after that experience (one over the classes seen)."""
    from cl_bench.metrics import chance_curve

    rows = []
    long = curves_long(runs)
    for (bench, split, method, t), block in long.groupby([*_GROUP_KEYS, "experience"], sort=True, dropna=False):
        mean, half, n = mean_ci(_per_seed(block, "accuracy").tolist(), confidence)
        sizes = split_sizes_of(split)
        chance = chance_curve(sizes)[t] if sizes and t < len(sizes) else float("nan")
        rows.append({"bench": bench, "split": split, "method": method, "experience": t,
                     "mean": mean, "ci": half, "n_seeds": n, "chance": chance})
    return pd.DataFrame(rows, columns=["bench", "split", "method", "experience", "mean", "ci", "n_seeds", "chance"])


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


def ledger_config(command: str, strategy: str) -> dict[str, Any] | None:
    """The configuration (without seed) a ledger entry's command runs, resolved like ``run.py``
    would resolve it; None when the command cannot be resolved (then no run matches the entry)."""
    from cl_bench.cli import parse_args
    from cl_bench.config import resolve_config
    from cl_bench.errors import UserError

    tokens = shlex.split(command)
    script = next((i for i, token in enumerate(tokens) if token.endswith(".py")), None)
    if script is None:
        return None
    try:
        values, _ = parse_args(tokens[script + 1:])
        if Path(tokens[script]).name == "compare.py":  # one strategy of a comparison; its seeds are the runs'
            values.pop("strategies", None)
            values.pop("seeds", None)
            values.setdefault("bench", "digits_animals")
            values["strategy"] = strategy
        values.pop("seed", None)
        config = resolve_config(values.pop("strategy"), values.pop("bench"), values)
    except (UserError, KeyError, ValueError):
        return None
    return _comparable_config(config.semantic_json())


def _matches_config(run_config: Mapping[str, Any], expected: Mapping[str, Any]) -> bool:
    return all(_config_key({"v": run_config.get(k)}) == _config_key({"v": v}) for k, v in expected.items())


def reproduction_table(ledger: pd.DataFrame, runs: pd.DataFrame | None = None,
                       confidence: float = CONFIDENCE) -> pd.DataFrame:
    """``ledger_table`` plus, per entry, the loaded runs whose configuration is the one the entry's
    command runs (mean ± CI over seeds, in percent like the paper) or 'not yet run' text where there
    are none; runs of the strategy, bench and split with another configuration are counted, not used."""
    table = ledger_table(ledger)
    loaded: dict[str, list[str]] = {"loaded runs Last": [], "loaded runs Avg": [], "loaded seeds": [],
                                    "other configs (runs left out)": []}
    for entry in ledger.itertuples():
        candidates = pd.DataFrame(columns=list(RUN_COLUMNS))
        if runs is not None and not runs.empty:
            candidates = runs[(runs["strategy"] == entry.strategy) & (runs["bench"] == entry.bench)
                              & (runs["split"] == entry.split)]
        expected = ledger_config(entry.command, entry.strategy) if len(candidates) else None
        match = candidates[candidates["config"].map(lambda c: _matches_config(c, expected))] if expected else candidates.iloc[:0]
        loaded["other configs (runs left out)"].append(str(len(candidates) - len(match)))
        if match.empty:
            loaded["loaded runs Last"].append(NOT_IN_THESE_RUNS)
            loaded["loaded runs Avg"].append(NOT_IN_THESE_RUNS)
            loaded["loaded seeds"].append("0")
            continue
        last = mean_ci(_per_seed(match, "last_accuracy").tolist(), confidence)
        avg = mean_ci(_per_seed(match, "avg_accuracy").tolist(), confidence)
        loaded["loaded runs Last"].append(format_mean_ci(*last[:2]))
        loaded["loaded runs Avg"].append(format_mean_ci(*avg[:2]))
        loaded["loaded seeds"].append(str(match["seed"].nunique()))
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
