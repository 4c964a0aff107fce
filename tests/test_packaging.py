"""The suite as an installed library: the methods install under ``cl_bench`` (no generic top-level
names in site-packages), every package folder is listed for installation, the core imports no
method, and the README's Avalanche example runs."""

import os
import shutil
import subprocess
import sys
import tomllib

import pytest

from helpers import REPO


def test_every_package_folder_is_installed_under_the_suites_namespace():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = config["package-dir"]
    assert mapping == {"cl_bench.strategies": "strategies", "cl_bench.baselines": "baselines"}
    on_disk = set()
    for folder, namespace in (("cl_bench", "cl_bench"), ("strategies", "cl_bench.strategies"), ("baselines", "cl_bench.baselines")):
        for init in (REPO / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO / folder).parts
            on_disk.add(".".join((namespace, *parts)))
    assert set(config["packages"]) == on_disk


def test_the_core_imports_no_method_and_old_names_are_refused():
    code = (
        "import sys\n"
        "import cl_bench.config, cl_bench.registry, cl_bench.cli, cl_bench.experiment, cl_bench.analysis, cl_bench.sweeping\n"
        "print(sorted(m for m in sys.modules if m.startswith(('cl_bench.strategies', 'cl_bench.baselines'))))\n"
        "try:\n"
        "    import strategies\n"
        "except ImportError as error:\n"
        "    print('refused:', 'cl_bench.strategies' in str(error))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[]", "refused: True"]


@pytest.mark.slow
def test_pip_install_puts_the_methods_under_cl_bench_only(tmp_path):
    source, target = tmp_path / "source", tmp_path / "site"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "wandb", "build", "*.egg-info",
                                                                 "__pycache__", "reports"))  # the build writes there
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                              "--disable-pip-version-check", "--target", str(target), str(source)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    top_level = {p.name for p in target.iterdir() if not p.name.endswith(".dist-info")}
    assert top_level == {"cl_bench"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import cl_bench, cl_bench.catalog\n"
            "from cl_bench.strategies.cl_lora.strategy import CLLoRA\n"
            "from cl_bench.baselines.l2p.strategy import L2P\n"
            "from cl_bench.registry import STRATEGIES\n"
            "print(cl_bench.__file__.startswith(sys.argv[1]), 'cl_lora' in STRATEGIES.names(), CLLoRA.__module__)\n")
    out = subprocess.run([sys.executable, "-c", "import sys\n" + code, str(target)], capture_output=True, text=True,
                         cwd=elsewhere, env={**os.environ, "PYTHONPATH": str(target)}, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "cl_bench.strategies.cl_lora.strategy"]


@pytest.mark.slow
def test_the_readme_avalanche_example_runs(tmp_path):
    readme = (REPO / "README.md").read_text()
    assert "sweeps/avalanche_quickstart.py" in readme and "## Use the strategies in your own Avalanche code" in readme
    out = subprocess.run([sys.executable, str(REPO / "sweeps" / "avalanche_quickstart.py"), "--per_class", "10"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("after experience")]
    assert len(lines) == 5 and all("stream accuracy" in line for line in lines)
