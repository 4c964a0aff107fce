"""Errors that reach users as one line and a non-zero exit code (see ``cl_bench.cli``)."""

from __future__ import annotations

__all__ = [
    "UserError",
    "ConfigError",
    "DataMissingError",
    "WeightsUnavailableError",
    "CheckpointError",
    "StrategyArgumentError",
    "NonFiniteLossError",
    "RunInterrupted",
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
    """Pretrained weights that are neither cached nor downloadable; the message names the tag."""


class CheckpointError(UserError):
    """A checkpoint that is corrupt, truncated or from another config/strategy/backbone."""


class StrategyArgumentError(ConfigError, ValueError):
    """A strategy built with an argument that does not fit (its model, a hyperparameter, an
    experience); the message names the argument. A ``ValueError`` too, for Avalanche users."""


class NonFiniteLossError(RuntimeError):
    """A NaN or infinite loss; the message names the experience, epoch and step."""

    exit_code = 3


class RunInterrupted(Exception):
    """SIGINT/SIGTERM arrived; the current step finished and the run was marked interrupted."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum
        self.exit_code = 128 + signum
