"""W&B sweep files: validation against ``sweeps/run.py``'s config, and the offline runner's logic.

A sweep file is W&B's own YAML (``program``, ``method``, ``metric``, ``parameters``, ``command``
with ``${args}``), so ``wandb sweep FILE`` + ``wandb agent ID`` run it on any number of machines;
``sweeps/local.py`` runs the same file with W&B's own search engine (the ``sweeps`` package) and
no server.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from cl_bench.config import resolve_config
from cl_bench.errors import ConfigError, UserError
from cl_bench.record import atomic_write_bytes

__all__ = [
    "SweepSpec",
    "load_sweep",
    "command_args",
    "candidate_assignments",
    "validate_sweep",
    "SweepState",
    "best_configurations",
    "SWEEP_METRICS",
]

#: Metrics a run reports to W&B and to its record, usable as a sweep's target.
SWEEP_METRICS = ("avg_accuracy", "last_accuracy", "forgetting", "bwt")
_METHODS = ("grid", "random", "bayes")
_ARGS_MACRO = "${args}"
#: Keys ``sweeps/local.py`` passes to every run itself.
_RUNNER_KEYS = ("out_dir", "resume")


class SweepError(UserError):
    """A sweep file that cannot run."""


@dataclass
class SweepSpec:
    path: Path
    data: dict[str, Any]

    @property
    def name(self) -> str:
        return self.data.get("name") or self.path.stem

    @property
    def method(self) -> str:
        return self.data["method"]

    @property
    def metric(self) -> str:
        return self.data["metric"]["name"]

    @property
    def goal(self) -> str:
        return self.data["metric"].get("goal", "maximize")

    @property
    def parameters(self) -> dict[str, dict[str, Any]]:
        return self.data["parameters"]


def load_sweep(path: str | Path) -> SweepSpec:
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"no sweep file at {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SweepError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise SweepError(f"{path}: a sweep file is a YAML mapping")
    return SweepSpec(path, data)


def command_args(values: dict[str, Any]) -> list[str]:
    """What W&B's ``${args}`` expands to: ``--key=value`` per parameter."""
    return [f"--{key}={_format(value)}" for key, value in values.items()]


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


#: Distributions W&B's grid search can enumerate, besides ``value``/``values``.
_GRID_DISTRIBUTIONS = ("int_uniform", "q_uniform")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _candidates(name: str, spec: Any, method: str = "random") -> list[Any]:
    """The values of a parameter that bound what it can produce: all listed values, or a
    distribution's extremes (and an inner point). Refuses what W&B would reject only mid-sweep."""
    if not isinstance(spec, dict):
        raise SweepError(f"parameter '{name}' must be a mapping such as {{value: {spec!r}}} or {{values: [...]}}, got {spec!r}")
    if method == "grid" and "probabilities" in spec:
        raise SweepError(f"parameter '{name}': grid search takes no probabilities")
    if "value" in spec:
        return [spec["value"]]
    if "values" in spec:
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise SweepError(f"parameter '{name}' has an empty list of values")
        return values
    if "min" in spec and "max" in spec:
        low, high = spec["min"], spec["max"]
        if not (_is_number(low) and _is_number(high)):
            raise SweepError(f"parameter '{name}': min and max must be finite numbers, got {low!r} and {high!r}")
        if low > high:
            raise SweepError(f"parameter '{name}' has min {low} > max {high}")
        distribution = spec.get("distribution", "int_uniform" if isinstance(low, int) and isinstance(high, int) else "uniform")
        if method == "grid" and distribution not in _GRID_DISTRIBUTIONS:
            raise SweepError(
                f"parameter '{name}': grid search cannot enumerate a {distribution} range from {low} to {high}; "
                "list the points with values: [...], use integer min/max, or method random or bayes"
            )
        if distribution.startswith("int") or distribution.startswith("q"):
            return [low, high]
        if "log" in distribution and "values" not in distribution:  # log_uniform: bounds are exponents
            low, high = math.exp(low), math.exp(high)
        return [low, (low + high) / 2, high]
    raise SweepError(f"parameter '{name}' needs value, values, or min and max")


def candidate_assignments(spec: SweepSpec) -> Iterator[dict[str, Any]]:
    """Every grid point, or the corners of a random/bayes search space."""
    names = list(spec.parameters)
    for combo in itertools.product(*(_candidates(n, spec.parameters[n], spec.data.get("method")) for n in names)):
        yield dict(zip(names, combo))


def validate_sweep(spec: SweepSpec, extra: dict[str, str] | None = None) -> int:
    """Refuse a sweep file, and the ``--key=value`` pairs passed to every run, before anything runs;
    returns how many assignments were checked."""
    data, where = spec.data, spec.path
    if data.get("program") != "sweeps/run.py":
        raise SweepError(f"{where}: program must be sweeps/run.py, got {data.get('program')!r}")
    if data.get("method") not in _METHODS:
        raise SweepError(f"{where}: method must be one of {', '.join(_METHODS)}, got {data.get('method')!r}")
    metric = data.get("metric")
    if not isinstance(metric, dict) or "name" not in metric:
        raise SweepError(f"{where}: missing metric (metric: {{name: avg_accuracy, goal: maximize}})")
    if metric["name"] not in SWEEP_METRICS:
        raise SweepError(f"{where}: metric {metric['name']!r} is not reported; use one of {', '.join(SWEEP_METRICS)}")
    if metric.get("goal", "maximize") not in ("maximize", "minimize"):
        raise SweepError(f"{where}: metric goal must be maximize or minimize")
    command = data.get("command", [])
    if _ARGS_MACRO not in command:
        raise SweepError(f"{where}: command must pass {_ARGS_MACRO} to sweeps/run.py")
    params = data.get("parameters")
    if not isinstance(params, dict) or not params:
        raise SweepError(f"{where}: no parameters")
    for required in ("strategy", "bench"):
        if required not in params:
            raise SweepError(f"{where}: parameter '{required}' is required")
    extra = dict(extra or {})
    both = sorted(set(extra) & (set(params) | set(_RUNNER_KEYS)))
    if both:
        raise SweepError(f"--{both[0]} is set by the sweep runner or file and cannot also be given on the command line")
    checked = 0
    for assignment in candidate_assignments(spec):
        values = {**{k: _format(v) for k, v in assignment.items()}, **extra}
        try:
            resolve_config(values.pop("strategy"), values.pop("bench"), values)
        except ConfigError as error:
            shown = " ".join(command_args(assignment) + [f"--{k}={v}" for k, v in extra.items()])
            raise SweepError(f"{where}: sweeps/run.py rejects {shown}: {error}") from None
        checked += 1
    return checked


# -- the offline runner's state --------------------------------------------------------------------
@dataclass
class SweepState:
    """Runs of one local sweep, persisted so re-running the command resumes it."""

    path: Path
    runs: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def open(cls, path: Path) -> "SweepState":
        if path.is_file():
            try:
                return cls(path, json.loads(path.read_text())["runs"])
            except (ValueError, KeyError, TypeError):
                raise SweepError(f"{path} is damaged (not the JSON the runner writes); move it away to start the sweep over") from None
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(path)

    def save(self) -> None:
        atomic_write_bytes(self.path, json.dumps({"runs": self.runs}, indent=1).encode())

    def record(self, entry: dict[str, Any]) -> None:
        self.runs = [r for r in self.runs if r["name"] != entry["name"]] + [entry]
        self.save()

    def finished(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["status"] == "finished"]

    def sweep_runs(self, metric: str) -> list:
        """The state as ``sweeps.SweepRun``s; finished runs carry the metric bayes learns from."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from sweeps import RunState, SweepRun

        states = {"finished": RunState.finished, "failed": RunState.failed, "running": RunState.running}
        runs = []
        for r in self.runs:
            summary = {metric: r["metric"]} if r.get("metric") is not None else {}
            runs.append(SweepRun(name=r["name"], state=states[r["status"]],
                                 config={k: {"value": v} for k, v in r["params"].items()},
                                 summary_metrics=summary, history=[summary] if summary else []))
        return runs


def best_configurations(runs: list[dict[str, Any]], metric: str, goal: str, top: int = 10) -> list[dict[str, Any]]:
    """Finished runs grouped by their parameters without the seed; mean ± 95% CI of the metric."""
    from cl_bench.analysis import mean_ci

    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        if r["status"] == "finished" and r.get("metric") is not None:
            key = json.dumps({k: v for k, v in sorted(r["params"].items()) if k != "seed"})
            groups.setdefault(key, []).append(r)
    rows = []
    for key, members in groups.items():
        mean, half, n = mean_ci([m["metric"] for m in members])
        rows.append({"params": json.loads(key), "mean": mean, "ci": half, "n_seeds": n})
    rows.sort(key=lambda row: row["mean"], reverse=goal == "maximize")
    return rows[:top]
