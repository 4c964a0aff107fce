"""Evaluation after each experience (protocol § Metrics): every seen class competes, no task
identity, and test batches shuffled across all seen experiences."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from cl_bench.efficiency import BlockPassCounter
from cl_bench.training.plugins import PredictionCollector

__all__ = ["EvalResult", "evaluate_seen_classes", "accuracy_by_experience"]


@dataclass(frozen=True)
class EvalResult:
    accuracy_per_experience: list[float]
    test_sizes: list[int]
    seconds: float
    block_passes_per_image: float
    vit_passes_per_image: float

    @property
    def n_test(self) -> int:
        return sum(self.test_sizes)

    @property
    def images_per_second(self) -> float:
        return self.n_test / self.seconds if self.seconds > 0 else float("nan")


def accuracy_by_experience(predictions: np.ndarray, targets: np.ndarray, experience_of_label: np.ndarray,
                           n_experiences: int) -> tuple[list[float], list[int]]:
    """``R[t][i]`` for ``i <= t`` from pooled predictions, and the test size of each experience."""
    correct = predictions == targets
    owner = experience_of_label[targets]
    accuracies, sizes = [], []
    for i in range(n_experiences):
        mask = owner == i
        sizes.append(int(mask.sum()))
        accuracies.append(float(correct[mask].mean()) if mask.any() else float("nan"))
    return accuracies, sizes


def evaluate_seen_classes(strategy, streams, t: int, *, collector: PredictionCollector,
                          counter: BlockPassCounter, shuffle_seed: int, num_workers: int = 0) -> EvalResult:
    experience = streams.seen_test_experience(t)
    strategy.eval_shuffle_seed = shuffle_seed
    collector.expected_width = streams.offsets[t + 1]
    counter.reset()
    evaluator_was_active = strategy.evaluator.active
    strategy.evaluator.active = False  # a merged experience is no stream experience for Avalanche's metrics
    try:
        with counter.counting():
            start = time.perf_counter()
            strategy.eval(experience, num_workers=num_workers)
            seconds = time.perf_counter() - start
    finally:
        strategy.evaluator.active = evaluator_was_active
    predictions, targets = (x.numpy() for x in collector.result())
    counter.images = len(targets)
    accuracies, sizes = accuracy_by_experience(predictions, targets, streams.experience_of_label(), t + 1)
    return EvalResult(
        accuracy_per_experience=accuracies,
        test_sizes=sizes,
        seconds=seconds,
        block_passes_per_image=counter.block_passes_per_image,
        vit_passes_per_image=counter.vit_passes_per_image,
    )
