"""Test setup: no network for W&B, quiet warnings, one torch thread count for determinism."""

import os

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import cl_bench.catalog  # noqa: E402,F401  (every strategy, bench and backbone name, before tests are collected)
