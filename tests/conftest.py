"""Test setup: no network for W&B, quiet warnings, one torch thread count for determinism."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Measured branch batching (cl_bench.models.branch_batching) caches its choices: never in ~/.cache from tests.
os.environ["CL_BENCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="cl-bench-test-cache-")
atexit.register(shutil.rmtree, os.environ["CL_BENCH_CACHE_DIR"], ignore_errors=True)

import cl_bench.catalog  # noqa: E402,F401  (every strategy, bench and backbone name, before tests are collected)
