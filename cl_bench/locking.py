"""One writer per run directory: an ``fcntl.flock`` on ``<run_dir>/.lock``.

The kernel drops the lock when its process dies, however it dies (SIGKILL, a crash, a lost node),
so a crashed run never leaves the directory locked. The file holds the owner's pid and host, for the
message the second process prints.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from cl_bench.errors import RunLockedError

__all__ = ["LOCK_FILE", "RunLock"]

LOCK_FILE = ".lock"


class RunLock:
    """Held from before the record is first written until the run ends."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self._lock_or_refuse(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def check_free(self) -> None:
        """Refuse now if a live process holds the lock; writes nothing."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        self._lock_or_refuse(fd)
        os.close(fd)  # drops the lock just taken

    def _lock_or_refuse(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLockedError(
                f"{self.path.parent} is in use by {owner}; wait for that run to end (or stop it), "
                "or use --run_name=NEW", key="run_name"
            ) from None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
