"""Run one experiment: python sweeps/run.py --strategy NAME --bench NAME [--key=value ...]."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import cl_bench.catalog  # noqa: E402,F401  (every strategy, bench and backbone name)
from cl_bench.cli import main  # noqa: E402
from cl_bench.tracking import exit_now_if_start_abandoned  # noqa: E402

if __name__ == "__main__":
    code = main()
    exit_now_if_start_abandoned(code)  # W&B's exit handlers would wait 25-38 s for an abandoned start
    sys.exit(code)
