"""Class-incremental metrics from the accuracy matrix ``R`` (protocol § Metrics).

``R[t][i]`` is the top-1 accuracy on the test samples of experience ``i <= t`` after training
experience ``t``; ``n[i]`` is the number of test samples of experience ``i``. ``A_t`` pools samples
(it is not the mean of ``R[t][:t+1]`` unless experiences have equal test sizes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = [
    "pooled_accuracy",
    "accuracy_curve",
    "last_accuracy",
    "average_incremental_accuracy",
    "forgetting",
    "backward_transfer",
    "old_new_accuracy",
    "chance_curve",
    "Summary",
    "summarize",
]


def _row(R: Sequence[Sequence[float]], t: int) -> np.ndarray:
    row = np.asarray(R[t][: t + 1], dtype=float)
    if row.shape != (t + 1,):
        raise ValueError(f"R[{t}] must hold at least {t + 1} entries")
    return row


def pooled_accuracy(R: Sequence[Sequence[float]], n: Sequence[int], t: int) -> float:
    """``A_t``: accuracy over all test samples of experiences ``0..t``."""
    weights = np.asarray(n[: t + 1], dtype=float)
    return float(np.dot(_row(R, t), weights) / weights.sum())


def accuracy_curve(R: Sequence[Sequence[float]], n: Sequence[int]) -> list[float]:
    return [pooled_accuracy(R, n, t) for t in range(len(R))]


def last_accuracy(R: Sequence[Sequence[float]], n: Sequence[int]) -> float:
    """Last = ``A_{T-1}``."""
    return pooled_accuracy(R, n, len(R) - 1)


def average_incremental_accuracy(R: Sequence[Sequence[float]], n: Sequence[int]) -> float:
    """Avg = ``(1/T) sum_t A_t``."""
    return float(np.mean(accuracy_curve(R, n)))


def forgetting(R: Sequence[Sequence[float]]) -> float | None:
    """Chaudhry et al.: ``mean_{i<T-1} (max_{l<T-1} R[l][i] - R[T-1][i])``; None for one experience."""
    T = len(R)
    if T < 2:
        return None
    drops = [max(R[l][i] for l in range(i, T - 1)) - R[T - 1][i] for i in range(T - 1)]
    return float(np.mean(drops))


def backward_transfer(R: Sequence[Sequence[float]]) -> float | None:
    """``(1/(T-1)) sum_{i<T-1} (R[T-1][i] - R[i][i])``; None for one experience."""
    T = len(R)
    if T < 2:
        return None
    return float(np.mean([R[T - 1][i] - R[i][i] for i in range(T - 1)]))


def old_new_accuracy(R: Sequence[Sequence[float]], n: Sequence[int], t: int) -> tuple[float | None, float]:
    """Pooled accuracy on the experiences before ``t`` (None at ``t = 0``) and on experience ``t``."""
    row = _row(R, t)
    new = float(row[t])
    if t == 0:
        return None, new
    weights = np.asarray(n[:t], dtype=float)
    return float(np.dot(row[:t], weights) / weights.sum()), new


def chance_curve(classes_per_experience: Sequence[int]) -> list[float]:
    """Accuracy of uniform guessing over the classes seen after each experience."""
    seen = np.cumsum(classes_per_experience)
    return [float(1.0 / s) for s in seen]


@dataclass(frozen=True)
class Summary:
    last: float
    avg: float
    forgetting: float | None
    bwt: float | None
    curve: list[float]
    chance_last: float
    chance_avg: float

    def as_dict(self) -> dict:
        return {
            "last_accuracy": self.last,
            "avg_accuracy": self.avg,
            "forgetting": self.forgetting,
            "bwt": self.bwt,
            "accuracy_curve": self.curve,
            "chance_last_accuracy": self.chance_last,
            "chance_avg_accuracy": self.chance_avg,
        }


def summarize(R: Sequence[Sequence[float]], n: Sequence[int], classes_per_experience: Sequence[int]) -> Summary:
    """Metrics over the experiences finished so far (a prefix of the stream is valid)."""
    curve = accuracy_curve(R, n)
    chance = chance_curve(classes_per_experience)[: len(R)]
    return Summary(
        last=curve[-1],
        avg=float(np.mean(curve)),
        forgetting=forgetting(R),
        bwt=backward_transfer(R),
        curve=curve,
        chance_last=chance[-1],
        chance_avg=float(np.mean(chance)),
    )
