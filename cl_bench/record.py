"""The run record: one self-describing JSON file per run, the source of truth for every result.

It is rewritten atomically after every experience (write a temporary file, fsync, rename), so a
run killed at any moment leaves the last complete version: the experiences it finished, with
status ``running``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from cl_bench.errors import DiskWriteError, RecordError
from cl_bench.metrics import old_new_accuracy, summarize

__all__ = ["RunRecord", "atomic_write_bytes", "RECORD_FORMAT", "RECORD_FILE"]

RECORD_FORMAT = "cl-bench-run/1"
RECORD_FILE = "record.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see either the old or the new file, never a part."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class RunRecord:
    """Dict-backed record with the few transitions a run goes through."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    @classmethod
    def create(cls, run_dir: Path, **fields: Any) -> "RunRecord":
        data = {
            "format": RECORD_FORMAT,
            "status": "running",
            "error": None,
            "created": _now(),
            "updated": _now(),
            "steps": [],
            "R": [],
            "metrics": None,
            **fields,
        }
        record = cls(run_dir / RECORD_FILE, data)
        record.save()
        return record

    @classmethod
    def load(cls, run_dir: Path) -> "RunRecord":
        """The record of ``run_dir``; a damaged one is a ``RecordError`` naming the file, never a traceback."""
        path = run_dir / RECORD_FILE
        try:
            data = json.loads(path.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RecordError(
                f"{path} is not valid JSON (truncated or edited: {error}); move the run directory away "
                "or use --run_name=NEW to start over"
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("status"), str) or not isinstance(data.get("steps"), list):
            raise RecordError(f"{path} is not a cl-bench run record (no status or steps); move it away or use --run_name=NEW")
        return cls(path, data)

    @property
    def status(self) -> str:
        return self.data["status"]

    @property
    def finished_experiences(self) -> int:
        return len(self.data["steps"])

    def save(self) -> None:
        self.data["updated"] = _now()
        try:
            atomic_write_bytes(self.path, json.dumps(self.data, indent=1, default=str).encode())
        except OSError as error:
            raise DiskWriteError(
                f"could not write {self.path} ({error.strerror or error}); the previous record is intact"
            ) from error

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.save()

    def add_step(self, step: dict[str, Any]) -> dict[str, Any]:
        """Append experience ``step['experience']`` and refresh the metrics of the finished prefix."""
        steps = self.data["steps"]
        if step["experience"] != len(steps):
            raise ValueError(f"experience {step['experience']} recorded after {len(steps)} steps")
        steps.append(step)
        self.data["R"] = [s["accuracy_per_experience"] for s in steps]
        summary = summarize(self.data["R"], self.data["test_sizes"], self.data["classes_per_experience"])
        t = step["experience"]
        old, new = old_new_accuracy(self.data["R"], self.data["test_sizes"], t)
        step.update(accuracy=summary.curve[-1], old_accuracy=old, new_accuracy=new)
        self.data["metrics"] = summary.as_dict()
        self.save()
        return self.data["metrics"]

    def truncate(self, n_steps: int) -> None:
        """Forget steps after ``n_steps`` (a resumed run recomputes them from its checkpoint)."""
        del self.data["steps"][n_steps:]
        self.data["R"] = self.data["R"][:n_steps]

    def finish(self, **fields: Any) -> None:
        self.update(status="finished", error=None, **fields)

    def fail(self, error: BaseException, status: str = "failed") -> None:
        self.update(status=status, error=f"{type(error).__name__}: {error}")
