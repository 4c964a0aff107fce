"""Fault injection: SIGKILL and resume, SIGTERM, determinism, NaN losses, foreign/corrupt
checkpoints, a full disk, and W&B failures. Run alone with ``pytest -m faults``."""

import errno
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cl_bench.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from cl_bench.errors import CheckpointError
from helpers import REPO, RUN_PY, cli_args, read_record, run_cli

pytestmark = pytest.mark.faults

#: Five experiences of a small CL-LoRA run: long enough to be killed in the middle of one.
RUN = {"strategy": "cl_lora", "bench": "digits_animals", "pretrained": "false", "train_per_class": 24,
       "test_per_class": 6, "epochs": 2, "batch_size": 16, "wandb_mode": "disabled", "threads": 1}


def args(tmp: Path, **extra):
    return cli_args({**RUN, "out_dir": str(tmp), "run_name": "r", **extra})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    result = run_cli(*args(out))
    assert result.returncode == 0, result.stderr
    return read_record(out / "r")


@pytest.fixture
def silent_server():
    """A W&B base URL whose server accepts connections and never answers: the slow-network case."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def _start(tmp: Path, **extra) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, str(RUN_PY), *args(tmp, **extra)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_steps(path: Path, n: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            if len(json.loads(path.read_text())["steps"]) >= n:
                return
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.05)
    raise TimeoutError


@pytest.mark.slow
def test_sigkill_mid_experience_then_resume_gives_the_same_R(tmp_path, uninterrupted):
    proc = _start(tmp_path)
    _wait_for_steps(tmp_path / "r" / "record.json", 2, proc)
    time.sleep(0.5)  # into experience 2
    proc.kill()
    proc.wait()
    partial = read_record(tmp_path / "r")
    assert partial["status"] == "running" and 2 <= len(partial["steps"]) < 5  # partial but valid
    assert partial["R"] == uninterrupted["R"][: len(partial["R"])]

    refused = run_cli(*args(tmp_path))  # without --resume the unfinished run is protected
    assert refused.returncode == 2 and "pass --resume" in refused.stderr
    assert read_record(tmp_path / "r")["steps"] == partial["steps"]

    resumed = run_cli(*args(tmp_path, resume="true"))
    assert resumed.returncode == 0, resumed.stderr
    record = read_record(tmp_path / "r")
    assert record["status"] == "finished" and record["resumed"] == 1
    assert record["R"] == uninterrupted["R"]  # exactly
    assert record["warnings"] == []  # same thread count: nothing to warn about


def test_same_seed_twice_gives_identical_metrics(tmp_path, uninterrupted):
    again = run_cli(*args(tmp_path))
    assert again.returncode == 0, again.stderr
    record = read_record(tmp_path / "r")
    assert record["R"] == uninterrupted["R"] and record["metrics"] == uninterrupted["metrics"]
    other_seed = run_cli(*args(tmp_path, seed=7, run_name="s7"))
    assert other_seed.returncode == 0
    assert read_record(tmp_path / "s7")["R"] != uninterrupted["R"]


def test_finished_run_is_not_repeated(tmp_path, uninterrupted):
    run_dir = tmp_path / "r"
    first = run_cli(*args(tmp_path))
    assert first.returncode == 0
    before = (run_dir / "record.json").read_bytes()
    second = run_cli(*args(tmp_path))
    assert second.returncode == 0 and "already finished" in second.stdout
    assert (run_dir / "record.json").read_bytes() == before


def test_sigterm_finishes_the_step_marks_interrupted_and_exits_nonzero(tmp_path):
    proc = _start(tmp_path)
    _wait_for_steps(tmp_path / "r" / "record.json", 1, proc)
    checkpoint = (tmp_path / "r" / CHECKPOINT_FILE)
    while not checkpoint.exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    record = read_record(tmp_path / "r")
    assert record["status"] == "interrupted" and "signal" in record["error"]
    assert load_checkpoint(tmp_path / "r")["finished_experiences"] >= 1
    resumed = run_cli(*args(tmp_path, resume="true", threads=2))  # the first part ran on one thread
    assert resumed.returncode == 0 and read_record(tmp_path / "r")["status"] == "finished"
    assert "resumed on 2 CPU threads" in resumed.stderr and "--threads 1" in resumed.stderr
    assert any("resumed on 2 CPU threads" in w for w in read_record(tmp_path / "r")["warnings"])


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path):
    from cl_bench.errors import NonFiniteLossError
    from cl_bench.experiment import run_experiment
    from helpers import tiny_config

    config = tiny_config("cl_lora", out_dir=str(tmp_path), run_name="nan", lr=1e30)
    with pytest.raises(NonFiniteLossError, match=r"non-finite .* at experience \d+, epoch \d+, step \d+"):
        run_experiment(config, quiet=True)
    record = read_record(tmp_path / "nan")
    assert record["status"] == "failed" and "non-finite" in record["error"]
    if record["steps"]:
        assert load_checkpoint(tmp_path / "nan")["finished_experiences"] == len(record["steps"])


def _finished_tiny_run(tmp_path: Path, **overrides):
    from cl_bench.experiment import run_experiment
    from helpers import tiny_config

    config = tiny_config("simple_cil", out_dir=str(tmp_path), run_name="x", **overrides)
    run_experiment(config, quiet=True)
    return config


def test_foreign_and_corrupt_checkpoints_are_refused(tmp_path):
    _finished_tiny_run(tmp_path)
    run_dir = tmp_path / "x"
    record = read_record(run_dir)
    record["status"] = "running"
    (run_dir / "record.json").write_text(json.dumps(record))
    base = [f"--out_dir={tmp_path}", "--run_name=x", "--resume", "--strategy=simple_cil", "--bench=digits_animals",
            "--pretrained=false", "--train_per_class=8", "--test_per_class=4", "--epochs=1", "--batch_size=16",
            "--eval_batch_size=64", "--wandb_mode=disabled"]

    changed = run_cli(*base, "--seed=5")
    assert changed.returncode == 2 and "another config" in changed.stderr and "seed: 1993 -> 5" in changed.stderr

    good = load_checkpoint(run_dir)
    save_checkpoint(run_dir, {**good, "backbone": {**good["backbone"], "sha256": "0" * 64}})
    foreign = run_cli(*base)
    assert foreign.returncode == 2 and "backbone sha256" in foreign.stderr

    blob = (run_dir / CHECKPOINT_FILE).read_bytes()
    (run_dir / CHECKPOINT_FILE).write_bytes(blob[: len(blob) // 2])
    truncated = run_cli(*base)
    assert truncated.returncode == 2 and "corrupt or truncated" in truncated.stderr
    assert read_record(run_dir)["status"] == "running"  # nothing written by the refused runs
    with pytest.raises(CheckpointError):
        load_checkpoint(run_dir)


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import cl_bench.record as record_module

    save_checkpoint(tmp_path, {"finished_experiences": 1, "x": torch.ones(3)})
    before = (tmp_path / CHECKPOINT_FILE).read_bytes()

    class FullDisk(io.FileIO):
        def write(self, data):
            super().write(data[: len(data) // 3])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(record_module, "open", lambda path, mode: FullDisk(path, "wb"), raising=False)
    from cl_bench.checkpoint import CheckpointWriteError

    with pytest.raises(CheckpointWriteError, match="No space left on device.*previous checkpoint is intact"):
        save_checkpoint(tmp_path, {"finished_experiences": 2, "x": torch.zeros(3)})
    assert (tmp_path / CHECKPOINT_FILE).read_bytes() == before
    assert load_checkpoint(tmp_path)["finished_experiences"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]  # no temporary file left


def test_unreachable_wandb_server_never_stops_training(tmp_path):
    env = {"WANDB_MODE": None, "WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"}
    started = time.time()
    result = run_cli(*cli_args({**RUN, "out_dir": str(tmp_path), "run_name": "w", "wandb_mode": "auto",
                                "wandb_timeout": 5, "epochs": 1}), env=env)
    assert result.returncode == 0, result.stderr
    record = read_record(tmp_path / "w")
    assert record["status"] == "finished" and record["wandb"]["mode"] == "offline"
    assert "unreachable" in record["wandb"]["reason"]
    assert list((tmp_path / "w" / "wandb").glob("offline-run-*/run-*.wandb"))  # syncable later
    assert time.time() - started < 240


def test_wandb_failing_mid_run_does_not_stop_training(tmp_path, monkeypatch):
    from cl_bench.tracking import WandbTracker

    calls = {"n": 0}
    original_start = WandbTracker.start

    def start(self):
        info = original_start(self)

        def broken_log(*a, **k):
            calls["n"] += 1
            raise ConnectionError("network flap")

        self.run.log = broken_log
        return info

    monkeypatch.setattr(WandbTracker, "start", start)
    monkeypatch.setenv("WANDB_MODE", "offline")
    _finished_tiny_run(tmp_path, wandb_mode="auto")
    record = read_record(tmp_path / "x")
    assert record["status"] == "finished" and len(record["steps"]) == 5 and calls["n"] == 1


def test_explicit_online_mode_falls_back_to_offline_after_its_timeout(tmp_path, monkeypatch, silent_server):
    from cl_bench.tracking import WandbTracker
    from helpers import tiny_config

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", silent_server)  # accepts connections, never answers
    tracker = WandbTracker(tiny_config("simple_cil", wandb_mode="online", wandb_timeout=5), tmp_path, run_id=None)
    started = time.time()
    info = tracker.start()
    assert info["mode"] == "offline" and info["reason"] == "online start failed"
    assert time.time() - started < 60
    tracker.log({"experience": 0, "eval/accuracy": 0.5})
    tracker.finish()
    assert len(list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))) == 1


def test_losses_checked_together_name_the_first_non_finite_one():
    """CL-LoRA checks its CE and KD losses in one device sync: a NaN KD loss still stops the run, named."""
    from types import SimpleNamespace

    import torch

    from cl_bench.errors import NonFiniteLossError
    from cl_bench.training.plugins import check_finite_losses

    strategy = SimpleNamespace(experience_index=1, clock=SimpleNamespace(train_exp_epochs=0, train_epoch_iterations=3))
    check_finite_losses(strategy, [("loss", torch.tensor(1.0)), ("KD loss", torch.tensor(2.0))])
    with pytest.raises(NonFiniteLossError, match=r"non-finite KD loss \(nan\) at experience 1, epoch 0, step 3"):
        check_finite_losses(strategy, [("loss", torch.tensor(1.0)), ("KD loss", torch.tensor(float("nan")))])
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(inf\)"):
        check_finite_losses(strategy, [("loss", torch.tensor(float("inf"))), ("KD loss", torch.tensor(float("nan")))])
