"""SimpleCIL has no keys of its own: it trains nothing, so epochs and learning rate are unused."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cl_bench.config import MethodConfig
from cl_bench.registry import STRATEGIES, StrategyEntry

__all__ = ["SimpleCILConfig"]


@dataclass
class SimpleCILConfig(MethodConfig):
    pass


STRATEGIES.register(
    "simple_cil",
    StrategyEntry(
        name="simple_cil",
        config_cls=SimpleCILConfig,
        builder="cl_bench.baselines.simple_cil.strategy:SimpleCIL",
        presets=Path(__file__).with_name("presets.yaml"),
        summary="frozen pretrained ViT + cosine nearest-class-mean prototypes (SimpleCIL, Zhou et al. 2023)",
    ),
)
