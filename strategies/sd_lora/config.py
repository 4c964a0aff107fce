"""SD-LoRA's keys; defaults are the official ``models/sdlora.py`` constants (spec §3.6, §4)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cl_bench.config import MethodConfig, option
from cl_bench.errors import ConfigError
from cl_bench.registry import STRATEGIES, StrategyEntry

__all__ = ["SDLoRAConfig"]


@dataclass
class SDLoRAConfig(MethodConfig):
    rank: int = option(10, "LoRA rank of each task's Q and V adapters (the first rank with rank_reduction)", minimum=1)
    momentum: float = option(0.9, "SGD momentum (constant learning rate, a new optimizer per experience)", minimum=0.0)
    magnitude_init: float = option(0.8, "initial value of every magnitude (0.8 official, 1.0 LibContinual)")
    reset_magnitudes: bool = option(
        True, "re-create every magnitude at magnitude_init when an experience starts, as the official code "
        "(false: keep the learned ones and add one)"
    )
    direction_norm: str = option(
        "factors", "normalisation of finished components: factors (each factor by its Frobenius norm, the code) "
        "or product (by the norm of up @ down, the paper's figure)", choices=("factors", "product")
    )
    rank_reduction: bool = option(False, "SD-LoRA-RR: lower the rank of later components (rr_milestones, rr_ranks)")
    rr_milestones: tuple[int, ...] = option((4, 8), "experiences (from 0) from which the reduced ranks apply")
    rr_ranks: tuple[int, ...] = option((8, 6), "the reduced ranks, one per milestone")

    def validate(self, config) -> None:
        if len(self.rr_milestones) != len(self.rr_ranks):
            raise ConfigError(
                f"keys 'rr_milestones' and 'rr_ranks' need one rank per milestone; got {self.rr_milestones} "
                f"and {self.rr_ranks}", key="rr_ranks",
            )
        if any(b <= a for a, b in zip(self.rr_milestones, self.rr_milestones[1:])) or any(m < 1 for m in self.rr_milestones):
            raise ConfigError(f"key 'rr_milestones' must be increasing experience indices >= 1; got {self.rr_milestones}",
                              key="rr_milestones")
        if any(r < 1 for r in self.rr_ranks):
            raise ConfigError(f"key 'rr_ranks' must be at least 1; got {self.rr_ranks}", key="rr_ranks")


STRATEGIES.register(
    "sd_lora",
    StrategyEntry(
        name="sd_lora",
        config_cls=SDLoRAConfig,
        builder="cl_bench.strategies.sd_lora.strategy:SDLoRA",
        presets=Path(__file__).with_name("presets.yaml"),
        summary="SD-LoRA (ICLR 2025): Q/V LoRA whose finished components become frozen directions with learnable magnitudes",
    ),
)
