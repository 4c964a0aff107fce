"""Run a W&B sweep file with no server: python sweeps/local.py sweeps/specs/FILE.yaml [--count N] [--parallel K]

W&B's own search engine (the ``sweeps`` package) proposes the parameters (grid, random or bayes);
each run is a subprocess of sweeps/run.py with the command line the sweep's ``${args}`` would
give. A failed run is recorded as failed and the sweep goes on. Re-running the command resumes:
finished runs are skipped and their results feed the bayes proposals. At the end, a table of
the best configurations with their metric aggregated over seeds.

Options: --count N (new runs this time; default: the whole grid, or 10 for random/bayes),
--parallel K (runs at once, default 1), --out_dir DIR (run records, default runs/, as run.py's),
and any --key=value, passed to every run (e.g. --wandb_mode=offline) and checked with every command
line first. Options are spelled with underscores like run.py's keys; dashes (--out-dir) are accepted
too. Metrics print in percent.
Exit codes: 0, 2 for a sweep file or key that run.py would reject, 3 when no run of the sweep finished.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cl_bench.catalog  # noqa: E402,F401  (every strategy, bench and backbone name)
from cl_bench.cli import ArgumentParser  # noqa: E402
from cl_bench.errors import RunStopped, UserError, report_errors  # noqa: E402
from cl_bench.sweeping import (  # noqa: E402
    SweepState,
    best_configurations,
    command_args,
    load_sweep,
    validate_sweep,
)

PROG = "sweeps/local.py"
DEFAULT_SEARCH_COUNT = 10
POLL_SECONDS = 0.5


def _propose(spec, state: SweepState):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sweeps import next_run

        proposal = next_run(spec.data, state.sweep_runs(spec.metric), validate=False)
    if proposal is None:
        return None
    return {k: (v["value"].item() if hasattr(v["value"], "item") else v["value"]) for k, v in proposal.config.items()}


def _run_name(state: SweepState) -> str:
    return f"run-{len(state.runs):04d}"


def _launch(params: dict, extra: list[str], out_dir: Path, log_dir: Path, name: str) -> subprocess.Popen:
    argv = [sys.executable, str(REPO / "sweeps" / "run.py"), *command_args(params), f"--out_dir={out_dir}", "--resume", *extra]
    log = open(log_dir / f"{name}.log", "w")
    return subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})


def _metric_of(params: dict, extra_values: dict, out_dir: Path, metric: str):
    """Read the run's record (its directory follows from the config, as run.py derives it)."""
    from cl_bench.config import resolve_config
    from cl_bench.record import RunRecord

    values = {k: str(v) for k, v in {**params, **extra_values}.items()}
    config = resolve_config(values.pop("strategy"), values.pop("bench"), values)
    run_dir = out_dir / (config.run.run_name or config.default_run_name)
    record = RunRecord.load(run_dir)
    return (record.data["metrics"] or {}).get(metric), str(run_dir)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0],
                            epilog="Any other --key=value goes to every run, as sweeps/run.py takes it.")
    parser.add_argument("sweep", help="a W&B sweep file, e.g. sweeps/specs/quick_offline.yaml")
    parser.add_argument("--count", type=int, default=None,
                        help=f"new runs this time (default: the whole grid, or {DEFAULT_SEARCH_COUNT} for random/bayes)")
    parser.add_argument("--parallel", type=int, default=1, help="runs at once (default: 1)")
    parser.add_argument("--out_dir", default="runs", help="directory of run records, as run.py's --out_dir (default: runs)")
    return parser


def _percent(value) -> str:
    """A metric as everything else prints it: fractions in the records, percent on screen."""
    return "n/a" if value is None or value != value else f"{100 * value:.2f}%"


def _finished_entry(name: str, params: dict, extra_values: dict, out_dir: Path, metric_name: str) -> dict:
    """The state entry of a run that exited 0, with its metric (None when the split has none, e.g.
    forgetting after one experience)."""
    try:
        metric, run_dir = _metric_of(params, extra_values, out_dir, metric_name)
    except UserError as error:  # the record is unreadable: count the run as failed, it is retried next time
        print(f"[{name}] failed: {error}", flush=True)
        return {"status": "failed", "metric": None}
    shown = "n/a (not defined for this run)" if metric is None else _percent(metric)
    print(f"[{name}] finished: {metric_name} = {shown}", flush=True)
    return {"status": "finished", "metric": metric, "run_dir": run_dir}


def main(argv: list[str] | None = None) -> int:
    return report_errors(PROG, lambda: _main(sys.argv[1:] if argv is None else list(argv)))


def _main(argv: list[str]) -> int:
    args, extra = build_parser().parse_known_args(argv)
    from cl_bench.cli import parse_args

    extra_values, _ = parse_args(extra)  # checked with every command line of the sweep, before any run
    spec = load_sweep(args.sweep)
    checked = validate_sweep(spec, extra_values)
    if args.parallel < 1 or (args.count is not None and args.count < 0):
        raise UserError("--parallel must be >= 1 and --count >= 0")

    out_dir = Path(args.out_dir).expanduser().resolve()
    state = SweepState.open(out_dir / "sweeps" / spec.name / "state.json")
    log_dir = state.path.parent / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    budget = args.count if args.count is not None else (None if spec.method == "grid" else DEFAULT_SEARCH_COUNT)
    print(f"sweep {spec.name}: {spec.method}, metric {spec.metric} ({spec.goal}), {checked} command lines checked, "
          f"{len(state.finished())} runs already finished", flush=True)

    # Runs that failed, or were cut off with the runner, are tried again first (once per invocation).
    retry = [r for r in state.runs if r["status"] in ("failed", "running")]
    running: dict[str, tuple[subprocess.Popen, dict]] = {}
    launched = 0
    exhausted = False
    try:
        while True:
            while len(running) < args.parallel and (budget is None or launched < budget):
                if retry:
                    entry = retry.pop(0)
                    params, name = entry["params"], entry["name"]
                elif not exhausted:
                    params = _propose(spec, state)
                    if params is None:
                        exhausted = True
                        continue
                    name = _run_name(state)
                else:
                    break
                state.record({"name": name, "params": params, "status": "running", "metric": None})
                running[name] = (_launch(params, extra, out_dir, log_dir, name), params)
                launched += 1
                print(f"[{name}] {' '.join(command_args(params))}", flush=True)
            if not running:
                break
            time.sleep(POLL_SECONDS)
            for name, (proc, params) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[name]
                entry = {"name": name, "params": params, "exit_code": proc.returncode}
                if proc.returncode == 0:
                    entry.update(_finished_entry(name, params, extra_values, out_dir, spec.metric))
                else:
                    entry.update(status="failed", metric=None)
                    print(f"[{name}] failed with exit code {proc.returncode} (log: {log_dir / (name + '.log')}); "
                          "the sweep goes on", flush=True)
                state.record(entry)
    finally:
        for proc, _ in running.values():  # interrupted: stop the children; their runs resume next time
            proc.terminate()

    failed = [r for r in state.runs if r["status"] == "failed"]
    best = best_configurations(state.runs, spec.metric, spec.goal)
    print(f"\n{len(state.finished())} finished, {len(failed)} failed. Best configurations by {spec.metric} "
          f"({spec.goal}; mean ± 95% CI over seeds, in %):")
    for row in best:
        ci = "" if row["ci"] != row["ci"] else f" ± {100 * row['ci']:.2f}"
        shown = " ".join(f"{k}={v}" for k, v in row["params"].items())
        print(f"  {100 * row['mean']:6.2f}{ci}  (n={row['n_seeds']})  {shown}")
    if launched and not state.finished():
        raise RunStopped(f"no run of sweep {spec.name} finished ({len(failed)} failed); their logs are in {log_dir}")
    print(f"\nRun records: {out_dir}/<run>/record.json; logs: {log_dir}. "
          f"Compare the configurations: python sweeps/report.py --runs {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
