"""InfLoRA's keys; defaults are the official ``configs/cifar100_inflora.json`` (spec §2.8, §4)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cl_bench.config import MethodConfig, option
from cl_bench.errors import ConfigError
from cl_bench.registry import STRATEGIES, StrategyEntry

__all__ = ["InfLoRAConfig"]


@dataclass
class InfLoRAConfig(MethodConfig):
    rank: int = option(10, "LoRA rank of each task's K and V adapters", minimum=1)
    threshold_start: float = option(
        0.95, "DualGPM energy threshold after the first task (lamb: 0.95 CIFAR, 0.98 ImageNet-R)", minimum=0.0
    )
    threshold_end: float = option(1.0, "DualGPM threshold the schedule rises to (lame)", minimum=0.0)
    threshold_tasks: int = option(
        0, "T of the threshold schedule eps_t = start + (end - start) t / T (0: the run's number of experiences, "
        "as the official total_sessions)", minimum=0
    )
    merge: bool = option(
        True, "fold each experience's LoRA into K and V after it (false: keep every component and sum them, "
        "as the official code)"
    )

    def validate(self, config) -> None:
        if not 0.0 < self.threshold_start <= self.threshold_end <= 1.0:
            raise ConfigError(
                "keys 'threshold_start' and 'threshold_end' must satisfy 0 < start <= end <= 1; "
                f"got {self.threshold_start} and {self.threshold_end}", key="threshold_start",
            )
        n_experiences = len(config.classes_per_experience())
        if 0 < self.threshold_tasks < n_experiences:
            raise ConfigError(
                f"key 'threshold_tasks' ({self.threshold_tasks}) is below the number of experiences "
                f"({n_experiences}): the threshold would pass 'threshold_end'; use 0 (the run's count)",
                key="threshold_tasks",
            )

    def schedule_tasks(self, config) -> int:
        """T in the threshold schedule: the run's real number of experiences unless fixed."""
        return self.threshold_tasks or len(config.classes_per_experience())


STRATEGIES.register(
    "inflora",
    StrategyEntry(
        name="inflora",
        config_cls=InfLoRAConfig,
        builder="cl_bench.strategies.inflora.strategy:InfLoRA",
        presets=Path(__file__).with_name("presets.yaml"),
        summary="InfLoRA (CVPR 2024): K/V LoRA with designed frozen down-projections (DualGPM), merged after each task",
    ),
)
