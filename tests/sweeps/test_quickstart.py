"""sweeps/quickstart.sh, with a stub Python whose venv has a recording pip: the first install says
what it does, --cpu takes torch from PyTorch's CPU wheel index and sticks to the venv, and a run
ends with where the results are and the next command. Nothing is downloaded."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from helpers import REPO

QUICKSTART = REPO / "sweeps" / "quickstart.sh"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

STUB_PYTHON = """#!/usr/bin/env bash
# A stand-in for python3: '-m venv DIR' makes a venv whose pip and python record their arguments.
set -e
[ "$1 $2" = "-m venv" ] || { echo "stub python: unexpected $*" >&2; exit 1; }
mkdir -p "$3/bin"
cat > "$3/bin/pip" <<'PIP'
#!/usr/bin/env bash
echo "pip $*" >> "$CALLS"
for arg in "$@"; do case "$arg" in *==*) echo "Collecting $arg";; esac; done
echo "Installing collected packages: x"
PIP
cat > "$3/bin/python" <<'PY'
#!/usr/bin/env bash
echo "python $*" >> "$CALLS"
PY
chmod +x "$3/bin/pip" "$3/bin/python"
"""


@pytest.fixture
def stub(tmp_path):
    python = tmp_path / "python3"
    python.write_text(STUB_PYTHON)
    python.chmod(0o755)
    return tmp_path


def quickstart(stub, *args: str, venv: str = "venv") -> subprocess.CompletedProcess:
    env = {**os.environ, "CL_BENCH_PYTHON": str(stub / "python3"), "CL_BENCH_VENV": str(stub / venv),
           "CL_BENCH_NO_APT": "1", "CALLS": str(stub / "calls.txt")}
    return subprocess.run(["bash", str(QUICKSTART), *args], capture_output=True, text=True, env=env, timeout=60)


def calls(stub) -> list[str]:
    return (stub / "calls.txt").read_text().splitlines() if (stub / "calls.txt").exists() else []


def test_cpu_install_says_what_it_does_uses_the_cpu_index_and_ends_with_the_next_step(stub):
    first = quickstart(stub, "--cpu")
    assert first.returncode == 0, first.stderr
    steps = [line for line in first.stdout.splitlines() if line.startswith("== ")]
    assert any("[1/3]" in s and "CPU-only" in s for s in steps) and any("[3/3]" in s for s in steps)
    assert "   Collecting torch==2.14.1" in first.stdout  # pip's progress, one line per package
    pips = [c for c in calls(stub) if c.startswith("pip ")]
    assert f"--index-url {CPU_INDEX} torch==2.14.1 torchvision==0.29.1" in pips[0]
    assert all("--index-url" not in c for c in pips[1:])  # everything else from PyPI
    assert calls(stub)[-1] == "python sweeps/compare.py --bench digits_animals"
    tail = first.stdout.strip().splitlines()[-3:]
    assert tail[0].startswith("Results:") and "runs/" in tail[0]
    assert "python sweeps/report.py --runs runs" in tail[1]

    again = quickstart(stub, "--test", "-q")  # the venv remembers --cpu: nothing to reinstall
    assert again.returncode == 0 and "==" not in again.stdout
    assert calls(stub)[-1] == "python -m pytest -q"


def test_cpu_switch_refuses_a_venv_holding_the_default_build(stub):
    assert quickstart(stub, "--python", "x.py").returncode == 0
    assert not any("--index-url" in c for c in calls(stub))
    refused = quickstart(stub, "--cpu")
    assert refused.returncode == 2 and "CUDA" in refused.stderr and "CL_BENCH_VENV" in refused.stderr


def test_quickstart_pins_torch_as_pyproject_does():
    script = QUICKSTART.read_text()
    pins = re.search(r'TORCH_PINS="([^"]+)"', script).group(1).split()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert pins and all(f'"{pin}"' in pyproject for pin in pins)
