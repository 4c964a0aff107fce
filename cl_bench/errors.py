"""Errors that reach users as one line and an exit code, and the one policy that prints them.

Exit codes of every entry point (``sweeps/run.py``, ``local.py``, ``compare.py``, ``report.py``):

- 0: done;
- 2: bad input or missing resources (``UserError``), found before anything is written where the check is cheap;
- 3: the run stopped on its own (``RunStopped``: divergence, a full disk); the last good checkpoint is kept;
- 128 + N: signal N (130 Ctrl-C, 143 SIGTERM); the run is marked ``interrupted`` and can be resumed.

Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import signal
import sys
from typing import Callable

__all__ = [
    "UserError",
    "ConfigError",
    "DataMissingError",
    "WeightsUnavailableError",
    "CheckpointError",
    "StrategyArgumentError",
    "RecordError",
    "RunLockedError",
    "RunStopped",
    "NonFiniteLossError",
    "DivergenceError",
    "DiskWriteError",
    "RunInterrupted",
    "exit_code_of",
    "report_errors",
]


class UserError(Exception):
    """Bad input or missing resources: printed as one line, exit code ``exit_code``."""

    exit_code = 2

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class ConfigError(UserError):
    """An unknown or ill-typed config key, or an impossible combination of values."""


class DataMissingError(UserError):
    """Data that is not on disk and cannot be downloaded; the message says where files go."""


class WeightsUnavailableError(UserError):
    """Pretrained weights that are missing, unreadable or of another architecture; the message names the file or tag."""


class CheckpointError(UserError):
    """A checkpoint that is corrupt, truncated, missing or from another config/strategy/backbone."""


class StrategyArgumentError(ConfigError, ValueError):
    """A strategy built with an argument that does not fit (its model, a hyperparameter, an
    experience); the message names the argument. A ``ValueError`` too, for Avalanche users."""


class RecordError(UserError):
    """A run record that cannot be read (truncated or hand-edited JSON)."""


class RunLockedError(UserError):
    """Another live process is writing into the same run directory."""


class RunStopped(RuntimeError):
    """The run stopped on its own after it started; what it finished is kept."""

    exit_code = 3


class NonFiniteLossError(RunStopped):
    """A NaN or infinite loss; the message names the experience, epoch and step."""


class DivergenceError(NonFiniteLossError):
    """Non-finite parameters, prototypes or logits; the message names what, and where in training."""


class DiskWriteError(RunStopped):
    """A record or checkpoint could not be written (full disk, ...); the previous file is untouched."""


class RunInterrupted(Exception):
    """SIGINT/SIGTERM arrived; the current step finished and the run was marked interrupted."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum
        self.exit_code = 128 + signum


def exit_code_of(error: BaseException) -> int | None:
    """The exit code of an expected failure, or None for a bug."""
    if isinstance(error, (UserError, RunStopped, RunInterrupted)):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return 128 + signal.SIGINT
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def report_errors(prog: str, body: Callable[[], int]) -> int:
    """Run an entry point's ``body`` and turn an expected failure into one line on stderr and its
    exit code; anything else propagates with its traceback, since it is a bug."""
    try:
        return body()
    except (UserError, RunStopped, RunInterrupted, KeyboardInterrupt) as error:
        kind = "error" if isinstance(error, UserError) else "stopped"
        message = _one_line(str(error)) or "interrupted by signal 2"
        print(f"{prog}: {kind}: {message}", file=sys.stderr, flush=True)
        return exit_code_of(error)
