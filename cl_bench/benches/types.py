"""What a bench loader hands to the stream builder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["RawBench"]


@dataclass
class RawBench:
    """Train and test datasets with ``.targets`` in the dataset's own label ids, and their transforms."""

    train: Any
    test: Any
    class_names: list[str]
    train_transform: Callable
    eval_transform: Callable
