"""Fault injection, part 2: bad input and faults end in one line and the right exit code, never in a
traceback, a silent wrong result or lost files. Run with ``pytest -m faults``.

Entry points run in-process (``cli.main``), so a traceback would fail the test as an exception, and
every refused command is checked to leave each file that existed before byte-identical.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from cl_bench import cli
from cl_bench.checkpoint import CHECKPOINT_FILE, load_checkpoint
from cl_bench.errors import (ConfigError, DivergenceError, RunInterrupted, RunStopped, UserError,
                             WeightsUnavailableError, report_errors)
from helpers import cli_args, read_record

pytestmark = pytest.mark.faults

#: Two experiences of SimpleCIL on the tiny bench: seconds in-process.
FAST = {"strategy": "simple_cil", "bench": "digits_animals", "pretrained": "false", "train_per_class": 8,
        "test_per_class": 4, "init_cls": 10, "inc_cls": 10, "epochs": 0, "batch_size": 16,
        "eval_batch_size": 64, "wandb_mode": "disabled", "threads": 1}


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run_main(capsys, tmp_path: Path, **extra) -> tuple[int, str]:
    """``sweeps/run.py`` in-process; returns the exit code and stderr."""
    values = {k: v for k, v in {**FAST, "out_dir": str(tmp_path), "run_name": "r", **extra}.items() if v is not None}
    code = cli.main(cli_args(values))
    return code, capsys.readouterr().err


def assert_one_line(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished two-experience run directory, copied by the tests that damage it."""
    out = tmp_path_factory.mktemp("finished")
    assert cli.main(cli_args({**FAST, "out_dir": str(out), "run_name": "r"})) == 0
    return out / "r"


def copy_run(source: Path, tmp_path: Path, *, status: str | None = None) -> Path:
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    for path in source.iterdir():
        if path.is_file():
            (run_dir / path.name).write_bytes(path.read_bytes())
    if status:
        record = read_record(run_dir)
        record["status"] = status
        (run_dir / "record.json").write_text(json.dumps(record))
    return run_dir


# -- one policy for every entry point -------------------------------------------------------------
@pytest.mark.parametrize("error, code, kind", [
    (ConfigError("bad key"), 2, "error"),
    (DivergenceError("diverged"), 3, "stopped"),
    (RunInterrupted(signal.SIGTERM), 143, "stopped"),
    (KeyboardInterrupt(), 130, "stopped"),
])
def test_expected_failures_become_one_line_and_their_exit_code(capsys, error, code, kind):
    def body():
        raise error

    assert report_errors("prog", body) == code
    assert_one_line(capsys.readouterr().err, f"prog: {kind}:")


def test_a_bug_keeps_its_traceback():
    with pytest.raises(ZeroDivisionError):
        report_errors("prog", lambda: 1 / 0)


def test_compare_and_report_use_the_policy(capsys, tmp_path):
    sys.path.insert(0, str(Path(cli.__file__).resolve().parent.parent / "sweeps"))
    import compare
    import report

    assert compare.main(["--bench=digits_animals", "--strategies=CL_LORA"]) == 2
    assert_one_line(capsys.readouterr().err, "did you mean 'cl_lora'")
    assert compare.main(["--seeds=a,b"]) == 2
    assert_one_line(capsys.readouterr().err, "--seeds expects")
    assert report.main([f"--runs={tmp_path / 'none'}", f"--out={tmp_path / 'out'}"]) == 2
    assert_one_line(capsys.readouterr().err, "no runs directory")
    assert not (tmp_path / "out").exists()


# -- values: finite, in range, names matched case-insensitively ------------------------------------
@pytest.mark.parametrize("key, value, fragment", [
    ("seed", "-5", "key 'seed' must be >= 0"),
    ("seed", str(2**32), "key 'seed' must be <= 4294967295"),
    ("class_order_seed", "-2", "key 'class_order_seed' must be >= -1"),
    ("lr", "nan", "key 'lr' must be a finite number"),
    ("lr", "inf", "key 'lr' must be a finite number"),
    ("wandb_timeout", "inf", "key 'wandb_timeout' must be a finite number"),
    ("strategy", "CL_LORA", "did you mean 'cl_lora'"),
    ("RANK", "4", "did you mean 'rank'"),
])
def test_bad_values_are_refused_before_anything_is_written(capsys, tmp_path, key, value, fragment):
    extra = {key: value}
    if key == "RANK":
        extra["strategy"] = "cl_lora"
    code, err = run_main(capsys, tmp_path, **extra)
    assert code == 2
    assert_one_line(err, fragment)
    assert not any(tmp_path.iterdir())


def test_every_float_key_of_every_strategy_must_be_finite():
    import dataclasses
    import typing

    from cl_bench.config import RunConfig, resolve_config
    from cl_bench.registry import BENCHES, STRATEGIES

    sections = [RunConfig, *(e.config_cls for _, e in STRATEGIES.items()), *(e.config_cls for _, e in BENCHES.items())]
    checked = 0
    for section in sections:
        hints = typing.get_type_hints(section)
        for f in dataclasses.fields(section):
            if hints[f.name] is not float or not f.metadata.get("finite", True):
                continue
            strategy = next((name for name, e in STRATEGIES.items() if e.config_cls is section), "simple_cil")
            bench = next((name for name, e in BENCHES.items() if e.config_cls is section), "digits_animals")
            for bad in ("nan", "-inf"):
                with pytest.raises(ConfigError, match=f"key '{f.name}' must be a finite number"):
                    resolve_config(strategy, bench, {f.name: bad})
            checked += 1
    assert checked >= 10


# -- devices, input size, output directory -----------------------------------------------------------
@pytest.mark.parametrize("extra, fragment", [
    ({"device": "nosuch"}, "key 'device': 'nosuch' is not a device"),
    ({"device": "cuda:7"}, "key 'device': cuda:7 does not exist here"),
    ({"img_size": 32}, "takes 28x28 images, not 32x32"),
])
def test_bad_device_and_image_size_are_refused_up_front(capsys, tmp_path, extra, fragment):
    if extra.get("device") == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    code, err = run_main(capsys, tmp_path, **extra)
    assert code == 2
    assert_one_line(err, fragment)
    assert not any(tmp_path.iterdir())


def test_unwritable_out_dir_is_refused_up_front(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, err = run_main(capsys, tmp_path, out_dir=str(blocker / "runs"))
    assert code == 2
    assert_one_line(err, "key 'out_dir'", "is not a directory")
    code, err = run_main(capsys, tmp_path, out_dir="/proc/self/runs")  # no file can be created there, even by root
    assert code == 2
    assert_one_line(err, "key 'out_dir': cannot write in /proc/self")
    assert snapshot(tmp_path) == {"file": b"not a folder"}


# -- weights files -----------------------------------------------------------------------------------
def _mini_state() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    from cl_bench.backbones import MINI_VIT_WEIGHTS

    return load_file(str(MINI_VIT_WEIGHTS))


def _bad_weights(tmp_path: Path, kind: str) -> Path:
    from safetensors.torch import save_file

    from cl_bench.backbones import MINI_VIT_WEIGHTS

    rng = np.random.default_rng(0)
    if kind.startswith("random"):
        path = tmp_path / f"w.{kind.split('.')[1]}"
        path.write_bytes(rng.bytes(4096))
    elif kind == "truncated.safetensors":
        path = tmp_path / "w.safetensors"
        path.write_bytes(MINI_VIT_WEIGHTS.read_bytes()[:200_000])
    elif kind == "truncated.pth":
        path = tmp_path / "w.pth"
        torch.save(_mini_state(), path)
        path.write_bytes(path.read_bytes()[:200_000])
    elif kind == "size_mismatch.pth":
        state = _mini_state()
        state["blocks.0.attn.qkv.weight"] = torch.zeros(10, 10)
        path = tmp_path / "w.pth"
        torch.save({"state_dict": state}, path)
    elif kind == "unexpected_keys.safetensors":
        state = {**_mini_state(), "head.extra.weight": torch.zeros(3)}
        path = tmp_path / "w.safetensors"
        save_file(state, str(path))
    elif kind == "wrong_depth.npz":
        path = tmp_path / "w.npz"
        np.savez(path, **{"embedding/kernel": np.zeros((4, 4, 3, 128), np.float32),
                          **{f"Transformer/encoderblock_{i}/LayerNorm_0/scale": np.ones(128, np.float32) for i in range(12)}})
    return path


@pytest.mark.parametrize("kind, fragment", [
    ("random.pth", "is not a readable weights file"),
    ("random.safetensors", "is not a readable weights file"),
    ("random.npz", "is not a readable weights file"),
    ("truncated.safetensors", "truncated"),
    ("truncated.pth", "is not a readable weights file"),
    ("size_mismatch.pth", "size mismatch for blocks.0.attn.qkv.weight"),
    ("unexpected_keys.safetensors", "Unexpected key(s)"),
    ("wrong_depth.npz", "depth 12 and width 128, not the 6 and 128"),
])
def test_bad_weights_files_are_refused_before_anything_is_written(capsys, tmp_path, kind, fragment):
    weights = _bad_weights(tmp_path, kind)
    before = snapshot(tmp_path)
    code, err = run_main(capsys, tmp_path, pretrained="true", pretrained_file=str(weights))
    assert code == 2
    assert_one_line(err, str(weights), fragment)
    assert snapshot(tmp_path) == before


def test_good_weights_files_pass_the_header_check(tmp_path):
    from safetensors.torch import save_file

    from cl_bench.backbones import MINI_VIT_WEIGHTS, check_weights_file
    from cl_bench.registry import BACKBONES

    entry = BACKBONES["vit_mini_patch4_28.fmnist_letters"]
    check_weights_file(entry, MINI_VIT_WEIGHTS)
    torch.save({"model": _mini_state()}, tmp_path / "w.pth")
    check_weights_file(entry, tmp_path / "w.pth")
    save_file(_mini_state(), str(tmp_path / "w.safetensors"))
    check_weights_file(entry, tmp_path / "w.safetensors")


# -- run directories: resume, damaged records, locks -------------------------------------------------
def test_resume_without_checkpoint_refuses_to_discard_finished_experiences(capsys, tmp_path, finished_run):
    run_dir = copy_run(finished_run, tmp_path, status="running")
    (run_dir / CHECKPOINT_FILE).unlink()
    before = snapshot(tmp_path)
    code, err = run_main(capsys, tmp_path, resume="true")
    assert code == 2
    assert_one_line(err, "records 2 finished experiences but has no checkpoint.pt", "--run_name=NEW")
    assert snapshot(tmp_path) == before


def test_truncated_record_on_resume_is_one_line(capsys, tmp_path, finished_run):
    run_dir = copy_run(finished_run, tmp_path, status="running")
    blob = (run_dir / "record.json").read_bytes()
    (run_dir / "record.json").write_bytes(blob[: len(blob) // 2])
    before = snapshot(tmp_path)
    code, err = run_main(capsys, tmp_path, resume="true")
    assert code == 2
    assert_one_line(err, "record.json is not valid JSON")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("case", ["running record, --resume", "running record", "started together: no record yet"])
def test_a_live_run_locks_its_directory(capsys, tmp_path, finished_run, case):
    from cl_bench.locking import RunLock

    if case.startswith("started together"):
        run_dir = tmp_path / "r"
        run_dir.mkdir()  # the first command has planned and locked, and not yet written its record
    else:
        run_dir = copy_run(finished_run, tmp_path, status="running")
    with RunLock(run_dir):  # the other run, in the middle of its work
        before = snapshot(tmp_path)
        code, err = run_main(capsys, tmp_path, **({"resume": "true"} if "--resume" in case else {}))
        assert snapshot(tmp_path) == before
    assert code == 2
    assert_one_line(err, "is in use by pid", "wait for that run to end")


def test_a_killed_run_leaves_no_stuck_lock(tmp_path):
    from cl_bench.locking import RunLock

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from cl_bench.locking import RunLock; "
        "from pathlib import Path; RunLock(Path(sys.argv[2])).acquire(); print('locked', flush=True); time.sleep(60)"),
        str(Path(cli.__file__).resolve().parent.parent), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(UserError, match="in use by pid"):
        RunLock(tmp_path).acquire()
    holder.kill()
    holder.wait()
    RunLock(tmp_path).acquire().release()  # the kernel dropped the dead process's lock


# -- divergence: stopped like a NaN loss, with the last good checkpoint kept ---------------------------
def test_non_finite_prototypes_stop_the_run_and_keep_the_last_good_checkpoint(capsys, tmp_path, monkeypatch):
    from cl_bench.registry import StrategyEntry

    real_load = StrategyEntry.load_class

    def diverging_class(entry):
        strategy_class = real_load(entry)

        def from_config(config, **kwargs):
            strategy = strategy_class.from_config(config, **kwargs)
            learned, train = strategy.learned_state, strategy.train
            trained = []

            def counting_train(experience, **train_kwargs):
                trained.append(experience)
                return train(experience, **train_kwargs)

            def poisoned():
                state = learned()
                if len(trained) == 2:  # the second experience "diverges"
                    name = next(k for k, t in state["tensors"].items() if t.is_floating_point())
                    state["tensors"][name] = state["tensors"][name].clone().fill_(float("nan"))
                return state

            strategy.learned_state, strategy.train = poisoned, counting_train
            return strategy
        return types.SimpleNamespace(from_config=from_config)

    monkeypatch.setattr(StrategyEntry, "load_class", diverging_class)
    code, err = run_main(capsys, tmp_path)
    assert code == 3
    assert_one_line(err, "stopped: training diverged: non-finite values in", "after training experience 1")
    record = read_record(tmp_path / "r")
    assert record["status"] == "failed" and "DivergenceError" in record["error"] and len(record["steps"]) == 1
    assert load_checkpoint(tmp_path / "r")["finished_experiences"] == 1


def _fake_strategy(model: torch.nn.Module, logits: torch.Tensor):
    clock = types.SimpleNamespace(train_exp_epochs=2, train_epoch_iterations=7, train_iterations=57)
    return types.SimpleNamespace(model=model, mb_output=logits, clock=clock, experience_index=3)


def test_health_check_names_what_diverged_and_where():
    from cl_bench.training.plugins import HealthCheck

    model = torch.nn.Linear(3, 2)
    check = HealthCheck(every=10)
    masked = torch.tensor([[1.0, float("-inf")]])  # -inf masks classes out (L2P, CODA-Prompt): allowed
    check.after_training_epoch(_fake_strategy(model, masked))
    with torch.no_grad():
        model.bias[1] = float("inf")
    with pytest.raises(DivergenceError, match=r"parameter bias at experience 3, epoch 2, step 7"):
        check.after_training_epoch(_fake_strategy(model, masked))
    healthy = torch.nn.Linear(3, 2)
    with pytest.raises(DivergenceError, match="training logits"):
        check.after_training_epoch(_fake_strategy(healthy, torch.tensor([[float("nan"), 0.0]])))
    strategy = _fake_strategy(model, masked)
    strategy.clock.train_iterations = 59  # not a multiple of `every`: no check, no sync
    check.after_training_iteration(strategy)

    check.after_training_exp(_fake_strategy(healthy, masked))
    check.before_eval_exp(None)
    for logits in (masked, torch.tensor([[float("nan"), 1.0]]), masked):
        check.after_eval_iteration(_fake_strategy(healthy, logits))
    with pytest.raises(DivergenceError, match="evaluation logits .* after training experience 3"):
        check.after_eval_exp(None)


@pytest.mark.parametrize("strategy", ["l2p", "ease"])
def test_a_normal_run_is_not_stopped_by_the_divergence_checks(tmp_path, monkeypatch, strategy):
    """The most eager setting (a check after every step) on methods that mask logits with -inf (L2P)
    or keep prototypes and adapters (EASE)."""
    from cl_bench.experiment import run_experiment
    from cl_bench.training import plugins
    from helpers import TINY_VIT_OVERRIDES, tiny_config

    monkeypatch.setattr(plugins, "HEALTH_CHECK_EVERY", 1)
    config = tiny_config(strategy, out_dir=str(tmp_path), run_name="ok", init_cls=10, inc_cls=10, threads=1,
                         **TINY_VIT_OVERRIDES.get(strategy, {}))
    record = run_experiment(config, quiet=True)
    assert record.status == "finished" and len(record.data["steps"]) == 2


def test_a_run_at_chance_is_finished_with_a_warning(capsys, tmp_path, monkeypatch):
    from cl_bench.training.plugins import PredictionCollector

    real = PredictionCollector.result

    def guessing(self):
        predictions, targets = real(self)
        return torch.zeros_like(predictions), targets  # always class 0

    monkeypatch.setattr(PredictionCollector, "result", guessing)
    code, err = run_main(capsys, tmp_path)
    assert code == 0 and "indistinguishable from chance" in err
    record = read_record(tmp_path / "r")
    assert record["status"] == "finished" and "indistinguishable from chance" in record["warnings"][0]


def test_a_good_run_has_no_chance_warning(finished_run):
    assert read_record(finished_run)["warnings"] == []


# -- disks and signals ---------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["checkpoint.pt", "record.json"])
def test_full_disk_is_one_line_and_keeps_the_previous_files(capsys, tmp_path, monkeypatch, target):
    import cl_bench.record as record_module

    real_write = record_module.atomic_write_bytes
    writes = {"n": 0}

    def full_disk_after_first_experience(path, data):
        if path.name == target:
            writes["n"] += 1
            if writes["n"] > (1 if target == "checkpoint.pt" else 4):  # record: create, start, data, experience 0
                raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(record_module, "atomic_write_bytes", full_disk_after_first_experience)
    import cl_bench.checkpoint as checkpoint_module

    monkeypatch.setattr(checkpoint_module, "atomic_write_bytes", full_disk_after_first_experience)
    code, err = run_main(capsys, tmp_path)
    assert code == 3
    assert_one_line(err, "No space left on device", "is intact")
    assert load_checkpoint(tmp_path / "r")["finished_experiences"] == 1
    assert len(read_record(tmp_path / "r")["steps"]) >= 1


def test_ctrl_c_while_wandb_starts_marks_the_run_interrupted_at_once(capsys, tmp_path, monkeypatch):
    import wandb

    from cl_bench import tracking

    def slow_start(**kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives while W&B waits for its server
        time.sleep(30)

    monkeypatch.setattr(wandb, "init", slow_start)
    monkeypatch.setattr(tracking, "_abandoned_starts", [])
    started = time.time()
    code, err = run_main(capsys, tmp_path, wandb_mode="offline")
    assert code == 130 and time.time() - started < 20
    assert_one_line(err, "stopped: interrupted by signal 2")
    record = read_record(tmp_path / "r")
    assert record["status"] == "interrupted" and tracking._abandoned_starts == ["offline"]


def test_an_abandoned_wandb_start_does_not_delay_the_exit(tmp_path):
    script = ("import atexit, sys, time; sys.path.insert(0, sys.argv[1]); from cl_bench import tracking; "
              "atexit.register(time.sleep, 30); tracking._abandoned_starts.append('online'); "
              "tracking.exit_now_if_start_abandoned(3)")
    started = time.time()
    result = subprocess.run([sys.executable, "-c", script, str(Path(cli.__file__).resolve().parent.parent)], timeout=60)
    assert result.returncode == 3 and time.time() - started < 20


# -- data and downloads ----------------------------------------------------------------------------------
def test_cifar_download_without_network_is_refused_before_the_record(capsys, tmp_path, monkeypatch):
    import cl_bench.benches as benches

    monkeypatch.setattr(benches, "CIFAR100_URL", "https://127.0.0.1:9/cifar-100-python.tar.gz")  # nothing listens
    code, err = run_main(capsys, tmp_path, bench="split_cifar100", data_root=str(tmp_path / "data"), download="true",
                         train_per_class=None, test_per_class=None, init_cls=50, inc_cls=50)
    assert code == 2
    assert_one_line(err, "CIFAR-100 is missing and cannot be downloaded", "127.0.0.1 unreachable")
    assert not any(tmp_path.iterdir())


def test_corrupt_local_cifar_files_are_not_reported_as_a_download_error(tmp_path):
    from cl_bench.benches.images import load_cifar100
    from cl_bench.errors import DataMissingError
    from helpers import tiny_config

    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "test", "meta"):
        (folder / name).write_bytes(b"junk")
    config = tiny_config("simple_cil", bench="split_cifar100", data_root=str(tmp_path), download=True, pretrained=True)
    with pytest.raises(DataMissingError, match="md5 check") as caught:
        load_cifar100(config)
    assert "URLError" not in str(caught.value)


def test_offline_hub_weights_fail_fast_with_a_whole_message(monkeypatch):
    from cl_bench.backbones import _hub_weights
    from cl_bench.registry import BACKBONES

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: what an offline machine sees
    started = time.time()
    with pytest.raises(WeightsUnavailableError) as caught:
        _hub_weights(BACKBONES["vit_base_patch16_224.orig_in21k"])
    assert time.time() - started < 5
    message = str(caught.value)
    assert "127.0.0.1 unreachable" in message and message.endswith("run with --pretrained=false")


def test_a_failed_run_that_finished_nothing_can_be_started_again(capsys, tmp_path, finished_run):
    run_dir = copy_run(finished_run, tmp_path, status="failed")
    record = read_record(run_dir)
    record.update(steps=[], R=[])
    (run_dir / "record.json").write_text(json.dumps(record))
    (run_dir / CHECKPOINT_FILE).unlink()
    code, err = run_main(capsys, tmp_path)
    assert code == 0, err
    assert read_record(run_dir)["status"] == "finished"


def test_runstopped_is_the_base_of_exit_code_3():
    assert issubclass(DivergenceError, RunStopped) and DivergenceError("x").exit_code == 3
