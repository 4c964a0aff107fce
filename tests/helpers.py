"""Small fakes and readers shared by the tests (the one place they live)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parent.parent
RUN_PY = REPO / "sweeps" / "run.py"

#: A bench small enough for unit tests: 8 train and 4 test images per class, 20 classes.
TINY_BENCH = {"train_per_class": 8, "test_per_class": 4}
#: Overrides that keep an end-to-end run to seconds and off the network.
QUICK_RUN = {"wandb_mode": "disabled", "epochs": 1, "batch_size": 16, "eval_batch_size": 64, **TINY_BENCH}


def tiny_vit(depth: int = 4, dim: int = 32, heads: int = 2, img_size: int = 28, patch_size: int = 4):
    """A random timm VisionTransformer of the suite's structure, small enough for CPU unit tests."""
    import timm

    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=0, global_pool="token",
        img_size=img_size, patch_size=patch_size, embed_dim=dim, depth=depth, num_heads=heads,
    )


def fake_backbone(vit=None, tag: str = "vit_mini_patch4_28.fashion_mnist"):
    from cl_bench.backbones import Backbone, BackboneInfo

    vit = tiny_vit() if vit is None else vit
    vit.requires_grad_(False)
    return Backbone(vit=vit, info=BackboneInfo(tag=tag, pretrained=False, sha256=None, source="test fake"))


def tiny_config(strategy: str, bench: str = "digits_animals", **overrides: Any):
    import dataclasses

    from cl_bench import catalog  # noqa: F401
    from cl_bench.config import resolve_config
    from cl_bench.registry import BENCHES

    bench_keys = {f.name for f in dataclasses.fields(BENCHES[bench].config_cls)}
    values = {k: v for k, v in {"pretrained": False, **QUICK_RUN}.items() if k not in TINY_BENCH or k in bench_keys}
    return resolve_config(strategy, bench, {**values, **overrides})


def build_strategy(strategy: str, *, vit=None, plugins=(), bench: str = "digits_animals", **overrides: Any):
    """A strategy on the tiny offline bench with a tiny random ViT, plus its streams."""
    import torch

    from cl_bench.benches.streams import build_streams
    from cl_bench.registry import STRATEGIES
    from cl_bench.seeding import seed_everything

    config = tiny_config(strategy, bench, **overrides)
    seed_everything(config.run.seed)
    streams = build_streams(config)
    backbone = fake_backbone(vit)
    builder = STRATEGIES[strategy].load_builder()
    return builder(config=config, backbone=backbone, streams=streams, device=torch.device("cpu"), plugins=list(plugins)), streams


def run_cli(*args: str, env: dict[str, str | None] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``sweeps/run.py`` in a subprocess; ``env`` values of None remove the variable."""
    full_env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    return subprocess.run([sys.executable, str(RUN_PY), *args], capture_output=True, text=True,
                          env=full_env, cwd=REPO, timeout=timeout)


def cli_args(values: dict[str, Any]) -> list[str]:
    return [f"--{k}={v}" for k, v in values.items()]


def read_record(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "record.json").read_text())


def wandb_records(path: Path, block: int = 32768) -> Iterator[Any]:
    """Protobuf records of an offline ``run-<id>.wandb`` file (leveldb-log framing, 7-byte header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B data file"
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos: pos + 7])
        pos += 7
        if kind == 0 and n == 0:
            break
        buf += data[pos: pos + n]
        pos += n
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def wandb_history(run_file: Path) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """History rows, final config and summary of an offline W&B run file."""
    history, config, summary = [], {}, {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
        elif kind == "run":
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "summary":
            summary.update({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.summary.update})
    return history, config, summary
