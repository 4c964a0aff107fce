"""Measured cost: parameters, ViT block passes (counted by hooks, not assumed), throughput, memory.

A method's cost is what a deployed model pays on an image it has not seen. Caches that only work
because the protocol re-evaluates the same test images (the prompt methods' query cache) are a
speed-up of the benchmark harness: ``harness_caches`` finds them and ``bypassing`` turns them off
for a measurement.
"""

from __future__ import annotations

import resource
import sys
import time
from contextlib import ExitStack, contextmanager
from typing import Any, Iterator

import torch
from avalanche.core import SupervisedPlugin

from cl_bench.models import branch_batching

__all__ = ["count_parameters", "BlockPassCounter", "ThroughputMeter", "peak_memory_mb", "reset_peak_memory",
           "harness_caches", "bypassing", "cache_hits"]


def count_parameters(module: torch.nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class BlockPassCounter:
    """Counts how many token sequences go through each transformer block.

    A forward pre-hook adds the batch size of every block call; passes per image are the total
    over blocks divided by the images seen, and full-ViT passes are that divided by the depth.
    """

    def __init__(self, blocks: torch.nn.ModuleList) -> None:
        self.blocks = blocks
        self.sequences = 0
        self.images = 0
        self._handles: list = []

    def _count(self, module, args) -> None:
        if not branch_batching.measuring():  # timing a batching choice is not the method's cost
            self.sequences += int(args[0].shape[0])

    @contextmanager
    def counting(self) -> Iterator["BlockPassCounter"]:
        self._handles = [b.register_forward_pre_hook(self._count) for b in self.blocks]
        try:
            yield self
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles = []

    def reset(self) -> None:
        self.sequences = 0
        self.images = 0

    @property
    def block_passes_per_image(self) -> float:
        return self.sequences / max(self.images, 1)

    @property
    def vit_passes_per_image(self) -> float:
        return self.block_passes_per_image / len(self.blocks)


class ThroughputMeter(SupervisedPlugin):
    """Training images per second over the epochs (forward, backward and the method's steps)."""

    def __init__(self) -> None:
        super().__init__()
        self.images = 0
        self.seconds = 0.0
        self.epoch_rates: list[float] = []
        self._t0 = 0.0
        self._epoch_images = 0

    def before_training_exp(self, strategy, **kwargs) -> None:
        self.images, self.seconds, self.epoch_rates = 0, 0.0, []

    def before_training_epoch(self, strategy, **kwargs) -> None:
        self._epoch_images = 0
        self._t0 = time.perf_counter()

    def after_training_iteration(self, strategy, **kwargs) -> None:
        self._epoch_images += len(strategy.mb_y)

    def after_training_epoch(self, strategy, **kwargs) -> None:
        seconds = time.perf_counter() - self._t0
        self.images += self._epoch_images
        self.seconds += seconds
        self.epoch_rates.append(self._epoch_images / seconds)

    @property
    def images_per_second(self) -> float | None:
        return self.images / self.seconds if self.seconds > 0 else None


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Peak CUDA memory allocated, or the process's peak resident set on CPU."""
    if device.type == "cuda":
        return {"peak_cuda_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20}
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    divisor = 2**20 if sys.platform == "darwin" else 2**10  # bytes on macOS, KiB on Linux
    return {"peak_rss_mb": rss_kb / divisor}


def harness_caches(strategy) -> list[Any]:
    """The evaluation caches a strategy holds (``QueryCache`` attributes), none for most methods."""
    from cl_bench.models.prompting import QueryCache

    return [value for value in vars(strategy).values() if isinstance(value, QueryCache)]


def cache_hits(caches: list[Any]) -> int:
    return sum(cache.hits for cache in caches)


@contextmanager
def bypassing(caches: list[Any]) -> Iterator[None]:
    """Every cache in ``caches`` bypassed (computed, not read or filled) for the duration."""
    with ExitStack() as stack:
        for cache in caches:
            stack.enter_context(cache.bypassed())
        yield
