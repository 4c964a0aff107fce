"""W&B sweep files and the offline runner: validation, a local grid to completion, a failing
run, resuming, and bayes proposals without a server."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import cl_bench.catalog  # noqa: F401
from cl_bench.seeding import SEEDS
from cl_bench.sweeping import SweepError, SweepState, best_configurations, load_sweep, validate_sweep
from helpers import REPO

SPECS = sorted((REPO / "sweeps" / "specs").glob("*.yaml"))
LOCAL = REPO / "sweeps" / "local.py"
TINY = ["--wandb_mode=disabled", "--pretrained=false", "--train_per_class=8", "--test_per_class=4",
        "--epochs=1", "--batch_size=16", "--eval_batch_size=64", "--threads=1"]


def test_there_are_reproduction_search_and_offline_sweeps():
    names = {p.stem for p in SPECS}
    assert {"reproduce", "reproduce_reference", "quick_offline"} <= names
    assert {f"search_{s}" for s in ("cl_lora", "l2p", "coda_prompt", "ease", "inflora", "sd_lora")} <= names


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_sweep_file_validates_and_run_py_accepts_every_command_line(path):
    spec = load_sweep(path)
    assert validate_sweep(spec) >= 1
    assert spec.data["program"] == "sweeps/run.py" and "${args}" in spec.data["command"]
    assert spec.method in ("grid", "random", "bayes")


def test_reproduction_sweeps_use_the_suites_seeds_and_cover_every_strategy():
    for name in ("reproduce", "reproduce_reference"):
        spec = load_sweep(REPO / "sweeps" / "specs" / f"{name}.yaml")
        assert spec.parameters["seed"]["values"] == list(SEEDS)
    from cl_bench.registry import STRATEGIES

    for name in ("reproduce", "quick_offline"):  # both promise every strategy
        strategies = set(load_sweep(REPO / "sweeps" / "specs" / f"{name}.yaml").parameters["strategy"]["values"])
        assert strategies == set(STRATEGIES.names()), name


def _write(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load((REPO / "sweeps" / "specs" / "quick_offline.yaml").read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("changes, fragment", [
    ({"parameters": {"strategy": {"value": "cl_lora"}, "bench": {"value": "digits_animals"}, "rnak": {"values": [4]}}},
     "unknown key 'rnak'"),
    ({"parameters": {"strategy": {"value": "cl_lora"}, "bench": {"value": "digits_animals"}, "inc_cls": {"values": [3, 4]}}},
     "impossible split"),
    ({"parameters": {"strategy": {"value": "cl_lora"}, "bench": {"value": "digits_animals"}, "seed": {"values": []}}},
     "empty list of values"),
    ({"metric": None}, "missing metric"),
    ({"metric": {"name": "accuracy"}}, "is not reported"),
    ({"command": ["python", "${program}"]}, "must pass ${args}"),
])
def test_bad_sweep_files_are_refused_before_anything_runs(tmp_path, changes, fragment):
    path = _write(tmp_path, **changes)
    with pytest.raises(SweepError, match=fragment.replace("$", r"\$").replace("{", r"\{").replace("}", r"\}").replace("(", r"\(").replace(")", r"\)")):
        validate_sweep(load_sweep(path))
    result = subprocess.run([sys.executable, str(LOCAL), str(path), f"--out_dir={tmp_path / 'runs'}"],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and fragment in result.stderr
    assert not (tmp_path / "runs").exists()


def _local(path: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(LOCAL), str(path), f"--out_dir={out}", *TINY, *extra],
                          capture_output=True, text=True, cwd=REPO, timeout=900)


@pytest.mark.slow
def test_local_grid_runs_to_completion_survives_a_failure_and_resumes(tmp_path):
    grid = _write(tmp_path, parameters={
        "strategy": {"value": "cl_lora"}, "bench": {"value": "digits_animals"},
        "seed": {"values": [0, 1]}, "lr": {"values": [0.01, 1.0e30]},  # lr 1e30: a NaN loss, the run fails
    })
    first = _local(grid, tmp_path / "runs", "--parallel", "2")
    assert first.returncode == 0, first.stderr
    state = json.loads((tmp_path / "runs" / "sweeps" / "quick_offline" / "state.json").read_text())["runs"]
    assert sorted(r["status"] for r in state) == ["failed", "failed", "finished", "finished"]
    assert all(r["exit_code"] == 3 for r in state if r["status"] == "failed")
    assert "Best configurations" in first.stdout and "(n=2)" in first.stdout  # the two seeds aggregate
    assert "= n/a" not in first.stdout and re.search(r"finished: avg_accuracy = \d+\.\d\d%", first.stdout)  # percent
    records = list((tmp_path / "runs").glob("cl_lora-*/record.json"))
    assert len(records) == 4 and sum(json.loads(p.read_text())["status"] == "finished" for p in records) == 2

    second = _local(grid, tmp_path / "runs")
    assert second.returncode == 0
    assert "2 runs already finished" in second.stdout
    relaunched = [line for line in second.stdout.splitlines() if line.startswith("[run-") and "--lr=" in line]
    assert relaunched and all("--lr=1e+30" in line for line in relaunched)  # only the failed ones again


def test_bayes_proposals_come_from_the_sweeps_engine_offline(tmp_path):
    sys.path.insert(0, str(REPO / "sweeps"))
    from local import _propose

    spec = load_sweep(_write(tmp_path, method="bayes", parameters={
        "strategy": {"value": "cl_lora"}, "bench": {"value": "digits_animals"},
        "lr": {"distribution": "log_uniform_values", "min": 0.001, "max": 0.1}, "rank": {"values": [4, 8]},
    }))
    state = SweepState(tmp_path / "state.json")
    for i, (lr, rank, score) in enumerate([(0.001, 4, 0.2), (0.01, 8, 0.5), (0.1, 4, 0.3)]):
        state.record({"name": f"r{i}", "status": "finished", "metric": score,
                      "params": {"strategy": "cl_lora", "bench": "digits_animals", "lr": lr, "rank": rank}})
    proposal = _propose(spec, state)
    assert 0.001 <= proposal["lr"] <= 0.1 and proposal["rank"] in (4, 8)
    assert isinstance(proposal["lr"], float)


def test_best_configurations_aggregate_over_seeds():
    runs = [
        {"status": "finished", "metric": 0.5, "params": {"lr": 0.1, "seed": 0}},
        {"status": "finished", "metric": 0.7, "params": {"lr": 0.1, "seed": 1}},
        {"status": "finished", "metric": 0.9, "params": {"lr": 0.2, "seed": 0}},
        {"status": "failed", "metric": None, "params": {"lr": 0.3, "seed": 0}},
    ]
    best = best_configurations(runs, "avg_accuracy", "maximize")
    assert [row["params"] for row in best] == [{"lr": 0.2}, {"lr": 0.1}]
    assert best[1]["mean"] == pytest.approx(0.6) and best[1]["n_seeds"] == 2
