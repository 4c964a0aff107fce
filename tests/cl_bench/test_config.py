"""Config precedence and every error path of sweeps/run.py (exit code 2, one line naming the key)."""

import subprocess
import sys

import pytest

import cl_bench.catalog  # noqa: F401
from cl_bench.cli import parse_args
from cl_bench.config import resolve_config, split_sizes
from cl_bench.errors import ConfigError
from helpers import REPO, run_cli


def test_precedence_defaults_bench_preset_cli():
    config = resolve_config("cl_lora", "split_cifar100", {"lr": "0.1"})
    assert config.run.backbone == "vit_base_patch16_224.augreg_in21k"  # bench default
    assert config.run.epochs == 30 and config.method.rank == 8  # preset
    assert config.run.lr == 0.1  # command line beats the preset's 0.03
    assert config.run.seed == 1993  # dataclass default
    assert config.origins["lr"] == "command line"
    assert config.origins["epochs"].startswith("preset 'default'")
    assert config.origins["init_cls"] == "defaults of bench split_cifar100"


def test_imagenet_r_preset():
    config = resolve_config("cl_lora", "imagenet_r", {})
    assert (config.run.epochs, config.run.batch_size, config.run.lr, config.run.weight_decay, config.method.rank) == (20, 32, 0.05, 5e-4, 10)
    assert config.run.backbone == "vit_base_patch16_224.augreg_in21k_ft_in1k"
    assert config.classes_per_experience() == [5] * 40


def test_both_cli_spellings_and_flags():
    a, _ = parse_args(["--strategy", "cl_lora", "--bench=split_cifar100", "--lr", "0.5", "--rank=4", "--no-distillation", "--resume"])
    assert a == {"strategy": "cl_lora", "bench": "split_cifar100", "lr": "0.5", "rank": "4", "distillation": "false", "resume": "true"}
    config = resolve_config(a.pop("strategy"), a.pop("bench"), a)
    assert config.run.lr == 0.5 and config.method.rank == 4 and config.method.distillation is False


def test_splits():
    assert split_sizes(100, 5, 5) == [5] * 20
    assert split_sizes(100, 0, 10) == [10] * 10  # PILOT "B0 Inc10"
    assert split_sizes(200, 20, 20) == [20] * 10
    with pytest.raises(ConfigError, match="impossible split"):
        split_sizes(100, 5, 7)


@pytest.mark.parametrize("overrides, key, fragment", [
    ({"rnak": "4"}, "rnak", "did you mean 'rank'"),
    ({"rank": "four"}, "rank", "expects an integer"),
    ({"lr": "fast"}, "lr", "expects a number"),
    ({"distillation": "maybe"}, "distillation", "expects a boolean"),
    ({"inc_cls": "7"}, "init_cls", "impossible split"),
    ({"transform": "fancy"}, "transform", "must be one of"),
    ({"epochs": "-1"}, "epochs", "must be >= 0"),
    ({"backbone": "vit_huge"}, "backbone", "unknown backbone"),
    ({"preset": "nope"}, "preset", "unknown preset"),
    ({"shared_blocks": "12"}, "shared_blocks", "must be -1 or in 0..11"),
    ({"pretrained_file": "/no/such/file.safetensors"}, "pretrained_file", "no such file"),
])
def test_errors_name_the_key(overrides, key, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        resolve_config("cl_lora", "split_cifar100", overrides)
    assert info.value.key == key and key in str(info.value)


def test_coda_pool_larger_than_the_width_is_refused():
    with pytest.raises(ConfigError, match="more than the ViT's width 128") as info:
        resolve_config("coda_prompt", "digits_animals", {"pool_size": "200"})
    assert info.value.key == "pool_size"


def test_unknown_names():
    with pytest.raises(ConfigError, match="unknown strategy 'cl_lor' \\(did you mean 'cl_lora'\\?\\); allowed: "):
        resolve_config("cl_lor", "split_cifar100", {})
    with pytest.raises(ConfigError, match="unknown bench 'cifar'"):
        resolve_config("cl_lora", "cifar", {})


@pytest.mark.parametrize("args, fragment", [
    (["--strategy", "nope", "--bench", "split_cifar100"], "unknown strategy 'nope'"),
    (["--strategy", "cl_lora", "--bench", "nope"], "unknown bench 'nope'"),
    (["--strategy", "cl_lora", "--bench", "split_cifar100", "--rnak=3"], "unknown key 'rnak'"),
    (["--strategy", "cl_lora", "--bench", "split_cifar100", "--rank", "x"], "key 'rank' expects an integer"),
    (["--strategy", "cl_lora", "--bench", "split_cifar100", "--init_cls=3", "--inc_cls=7"], "impossible split"),
    (["--strategy", "cl_lora", "--bench", "split_cifar100", "--download=false", "--data_root=/nonexistent"], "CIFAR-100 is missing"),
    (["--bench", "split_cifar100"], "missing --strategy"),
    (["stray"], "unexpected argument"),
])
def test_cli_errors_exit_2_with_one_line(args, fragment):
    result = run_cli(*args, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert result.stdout == ""


def test_errors_happen_before_heavy_imports():
    code = (
        "import sys; import cl_bench.catalog; from cl_bench.cli import main; "
        "rc = main(['--strategy', 'cl_lora', '--bench', 'split_cifar100', '--rank=x']); "
        "print(rc, 'torch' in sys.modules, 'avalanche' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.stdout.split() == ["2", "False", "False"], out.stderr


def test_help_lists_strategies_benches_and_keys():
    result = run_cli("--help", timeout=60)
    assert result.returncode == 0
    for word in ("cl_lora", "simple_cil", "split_cifar100", "imagenet_r", "digits_animals", "--rank=", "--seed=", "--init_cls="):
        assert word in result.stdout
    scoped = run_cli("--strategy", "cl_lora", "--bench", "imagenet_r", "--help", timeout=60)
    assert "presets for imagenet_r: default" in scoped.stdout
