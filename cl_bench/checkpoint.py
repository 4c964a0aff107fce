"""Per-experience checkpoints: atomic, checksummed, and refused when they belong to another run.

File layout: 8-byte magic, 32-byte sha256 of the payload, then the ``torch.save`` payload. The
payload holds only tensors and plain values, so it loads with ``weights_only=True``. The frozen
backbone is not stored, only its tag and sha256.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import torch

from cl_bench.config import config_differences
from cl_bench.errors import CheckpointError, DiskWriteError
from cl_bench.record import atomic_write_bytes

__all__ = ["CHECKPOINT_FILE", "save_checkpoint", "load_checkpoint", "check_compatible", "CheckpointWriteError"]

CHECKPOINT_FILE = "checkpoint.pt"
_MAGIC = b"CLBCKPT1"
_DIGEST_BYTES = 32


class CheckpointWriteError(DiskWriteError):
    """Writing failed (full disk, ...); the previous checkpoint is untouched (exit code 3, one line)."""


def save_checkpoint(run_dir: Path, payload: dict[str, Any]) -> Path:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    path = run_dir / CHECKPOINT_FILE
    try:
        atomic_write_bytes(path, _MAGIC + hashlib.sha256(data).digest() + data)
    except OSError as error:
        raise CheckpointWriteError(
            f"could not write {path} ({error.strerror or error}); the previous checkpoint is intact"
        ) from error
    return path


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    blob = path.read_bytes()
    head = len(_MAGIC) + _DIGEST_BYTES
    if len(blob) < head or blob[: len(_MAGIC)] != _MAGIC:
        raise CheckpointError(f"{path} is not a cl-bench checkpoint (or is truncated)")
    data = blob[head:]
    if hashlib.sha256(data).digest() != blob[len(_MAGIC): head]:
        raise CheckpointError(f"{path} is corrupt or truncated (checksum mismatch); delete it to restart the run")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path} could not be read ({type(error).__name__}: {error})") from None


def check_compatible(checkpoint: dict[str, Any], *, semantic_config: dict[str, Any], backbone: dict[str, Any]) -> None:
    """Refuse a checkpoint of another config, strategy or backbone, saying what differs."""
    diffs = config_differences(checkpoint.get("config", {}), semantic_config)
    saved_backbone = checkpoint.get("backbone", {})
    diffs += [f"backbone {d}" for d in config_differences(
        {k: saved_backbone.get(k) for k in ("tag", "sha256")}, {k: backbone.get(k) for k in ("tag", "sha256")})]
    if diffs:
        raise CheckpointError("checkpoint belongs to another run: " + "; ".join(diffs))
