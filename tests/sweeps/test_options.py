"""Option spellings agree across the scripts: every option is spelled with underscores like
run.py's config keys, every script also accepts the dashed spelling, one concept has one name
everywhere, and the docs use the documented spelling."""

from __future__ import annotations

import dataclasses
import importlib.util
import re

import pytest

import cl_bench.catalog  # noqa: F401
from cl_bench.cli import ArgumentParser, parse_args
from cl_bench.config import RunConfig
from helpers import REPO

#: The scripts with their own argparse options (each exposes ``build_parser()``).
ARGPARSE_SCRIPTS = ("local.py", "report.py", "bench_efficiency.py", "pretrain.py", "make_imagenet_r_split.py")
#: Options of compare.py besides the run keys it passes on.
COMPARE_OPTIONS = ("bench", "strategies", "seeds")
#: One concept, one name: the scripts that take it, all under run.py's key name.
SHARED = {
    "out_dir": ("run.py", "local.py"),
    "wandb_project": ("run.py", "report.py"),
    "wandb_entity": ("run.py", "report.py"),
    "batch_size": ("run.py", "bench_efficiency.py", "pretrain.py"),
    "threads": ("run.py", "bench_efficiency.py", "pretrain.py"),
    "backbone": ("run.py", "bench_efficiency.py"),
    "device": ("run.py", "bench_efficiency.py"),
    "seed": ("run.py", "pretrain.py", "make_imagenet_r_split.py"),
}
SNAKE = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)*$")


def parser_of(script: str) -> ArgumentParser:
    spec = importlib.util.spec_from_file_location(f"script_{script[:-3]}", REPO / "sweeps" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser()


def options_of(parser) -> dict[str, object]:
    """Long option name (without ``--``) -> its argparse action."""
    return {s[2:]: a for a in parser._actions for s in a.option_strings if s.startswith("--") and s != "--help"}


@pytest.fixture(scope="module")
def script_options() -> dict[str, set[str]]:
    from cl_bench.registry import BENCHES, STRATEGIES

    run_keys = {f.name for cls in (RunConfig, *(e.config_cls for _, e in (*BENCHES.items(), *STRATEGIES.items())))
                for f in dataclasses.fields(cls)} | {"strategy", "bench"}
    options = {"run.py": run_keys, "compare.py": run_keys | set(COMPARE_OPTIONS)}
    options.update({script: set(options_of(parser_of(script))) for script in ARGPARSE_SCRIPTS})
    return options


def test_every_option_of_every_script_is_snake_case(script_options):
    bad = {script: sorted(o for o in names if not SNAKE.match(o)) for script, names in script_options.items()}
    assert not any(bad.values()), bad


def test_one_concept_has_one_name_in_every_script(script_options):
    for name, scripts in SHARED.items():
        for script in scripts:
            assert name in script_options[script], f"{script} lacks --{name}"
    spelled: dict[str, set[str]] = {}
    for names in script_options.values():
        for name in names:
            spelled.setdefault(name.replace("_", ""), set()).add(name)
    assert not [s for s in spelled.values() if len(s) > 1], "one option spelled two ways across the scripts"


@pytest.mark.parametrize("script", ARGPARSE_SCRIPTS)
def test_argparse_scripts_accept_the_dashed_spelling_too(script):
    parser = parser_of(script)
    assert isinstance(parser, ArgumentParser)
    positionals = ["x" for a in parser._actions if not a.option_strings]
    for name, action in options_of(parser).items():
        if "_" not in name or action.help == "==SUPPRESS==":
            continue
        value = [] if action.nargs == 0 else [str(action.choices[0]) if action.choices else "1"]
        dashed = parser.parse_args([*positionals, "--" + name.replace("_", "-"), *value])
        underscored = parser.parse_args([*positionals, "--" + name, *value])
        assert vars(dashed) == vars(underscored), f"{script} --{name.replace('_', '-')}"


def test_run_py_and_compare_py_accept_both_spellings():
    assert parse_args(["--out-dir", "a", "--wandb-mode=offline", "--no-adapter-growth"])[0] == \
        parse_args(["--out_dir", "a", "--wandb_mode=offline", "--no-adapter_growth"])[0]


def test_docs_use_the_underscore_spelling():
    """Commands of our scripts in the READMEs and the scripts' own docstrings spell options with
    underscores (``--no-flag`` is run.py's documented negation)."""
    paths = [REPO / "README.md", *REPO.glob("*/README.md"), *REPO.glob("*/*/README.md"), *REPO.glob("sweeps/*.py"),
             *REPO.glob("sweeps/*.sh"), *REPO.glob("notebooks/*.ipynb")]
    texts = {p.relative_to(REPO): p.read_text() for p in paths}
    found = []
    for path, text in texts.items():
        for command in re.findall(r"sweeps/\w+\.py[^\n`|]*", text):
            found += [(str(path), o) for o in re.findall(r"(?<![\w-])--(?!no-)[a-z0-9]+-[a-z0-9-]+", command)]
    assert not found, found


@pytest.mark.parametrize("script", ARGPARSE_SCRIPTS)
def test_every_option_has_help(script):
    missing = [name for name, action in options_of(parser_of(script)).items() if not action.help]
    assert not missing, f"{script}: no help for {missing}"


def test_bench_efficiency_help_imports_neither_torch_nor_avalanche():
    import subprocess
    import sys

    probe = ("import runpy, sys; sys.argv = ['bench_efficiency.py', '--help']\n"
             "try:\n    runpy.run_path('sweeps/bench_efficiency.py', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print('heavy:', sorted(m for m in ('torch', 'avalanche', 'timm') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--train_per_experience" in result.stdout and result.stdout.strip().endswith("heavy: []")
