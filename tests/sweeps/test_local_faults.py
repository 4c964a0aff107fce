"""Fault injection for sweep files and ``sweeps/local.py``: refused up front in one line, a run
without its metric, and a sweep where no run finishes. In-process, no training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cl_bench.sweeping import SweepError, load_sweep, validate_sweep
from helpers import REPO

pytestmark = pytest.mark.faults

sys.path.insert(0, str(REPO / "sweeps"))
import local  # noqa: E402

BASE = {"strategy": {"value": "simple_cil"}, "bench": {"value": "digits_animals"}}


def write_sweep(tmp_path: Path, parameters: dict, method: str = "grid", metric: str = "avg_accuracy") -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        "name": "s", "program": "sweeps/run.py", "method": method, "metric": {"name": metric, "goal": "maximize"},
        "parameters": parameters, "command": ["python", "${program}", "${args}"],
    }))
    return path


def run_local(capsys, *argv: str) -> tuple[int, str, str]:
    code = local.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(err: str, fragment: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err and fragment in lines[0], err


@pytest.mark.parametrize("parameters, method, fragment", [
    ({**BASE, "lr": {"min": 0.001, "max": 0.1}}, "grid", "grid search cannot enumerate a uniform range"),
    ({**BASE, "lr": {"min": "a", "max": 0.1}}, "random", "min and max must be finite numbers, got 'a'"),
    ({**BASE, "lr": 0.01}, "grid", "parameter 'lr' must be a mapping such as {value: 0.01}"),
    ({**BASE, "seed": {"values": [0, 1], "probabilities": [0.5, 0.5]}}, "grid", "grid search takes no probabilities"),
])
def test_bad_sweep_files_are_refused_up_front(capsys, tmp_path, parameters, method, fragment):
    path = write_sweep(tmp_path, parameters, method)
    with pytest.raises(SweepError, match="parameter"):
        validate_sweep(load_sweep(path))
    code, _, err = run_local(capsys, str(path), f"--out-dir={tmp_path / 'runs'}")
    assert code == 2
    assert_one_line(err, fragment)
    assert not (tmp_path / "runs").exists()


def test_a_grid_over_integer_ranges_is_still_accepted(tmp_path):
    path = write_sweep(tmp_path, {**BASE, "seed": {"min": 0, "max": 2}})
    assert validate_sweep(load_sweep(path)) == 2  # the corners of the range


@pytest.mark.parametrize("extra, fragment", [
    ("--rnak=4", "unknown key 'rnak'"),
    ("--lr=nan", "key 'lr' must be a finite number"),
    ("--seed=3", "--seed is set by the sweep runner or file"),
])
def test_extra_keys_are_checked_before_any_run(capsys, tmp_path, extra, fragment):
    path = write_sweep(tmp_path, {**BASE, "seed": {"values": [0, 1]}})
    code, _, err = run_local(capsys, str(path), f"--out_dir={tmp_path / 'runs'}", extra)
    assert code == 2
    assert_one_line(err, fragment)
    assert not (tmp_path / "runs").exists()


def test_a_run_without_its_metric_is_finished_not_a_crash(capsys, tmp_path, monkeypatch):
    """``forgetting`` after a single experience is None: the run is finished, shown as n/a, and the
    next invocation does not crash on it."""
    from cl_bench.config import resolve_config

    path = write_sweep(tmp_path, {**BASE, "init_cls": {"value": 20}}, metric="forgetting")
    out = tmp_path / "runs"
    config = resolve_config("simple_cil", "digits_animals", {"init_cls": "20", "out_dir": str(out)})

    def fake_launch(params, extra, out_dir, log_dir, name):
        run_dir = out_dir / config.default_run_name
        run_dir.mkdir(parents=True)
        (run_dir / "record.json").write_text(json.dumps({"status": "finished", "steps": [{}], "metrics": {"forgetting": None}}))
        return subprocess.Popen([sys.executable, "-c", "pass"])

    monkeypatch.setattr(local, "_launch", fake_launch)
    monkeypatch.setattr(local, "POLL_SECONDS", 0.05)
    code, stdout, err = run_local(capsys, str(path), f"--out-dir={out}")
    assert code == 0, err
    assert "forgetting = n/a" in stdout
    state = json.loads((out / "sweeps" / "s" / "state.json").read_text())["runs"]
    assert [(r["status"], r["metric"]) for r in state] == [("finished", None)]
    again, stdout, err = run_local(capsys, str(path), f"--out-dir={out}")
    assert again == 0 and "1 runs already finished" in stdout, err


def test_a_sweep_where_no_run_finishes_exits_nonzero(capsys, tmp_path, monkeypatch):
    path = write_sweep(tmp_path, {**BASE, "seed": {"values": [0, 1]}})
    monkeypatch.setattr(local, "_launch", lambda *a: subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"]))
    monkeypatch.setattr(local, "POLL_SECONDS", 0.05)
    code, stdout, err = run_local(capsys, str(path), f"--out-dir={tmp_path / 'runs'}")
    assert code == 3
    assert_one_line(err, "no run of sweep s finished (2 failed)")
    assert stdout.count("failed with exit code 3") == 2


def test_a_damaged_sweep_state_is_one_line(capsys, tmp_path):
    path = write_sweep(tmp_path, BASE)
    state = tmp_path / "runs" / "sweeps" / "s" / "state.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"runs": [')
    code, _, err = run_local(capsys, str(path), f"--out-dir={tmp_path / 'runs'}")
    assert code == 2
    assert_one_line(err, "state.json is damaged")
    assert state.read_text() == '{"runs": ['
