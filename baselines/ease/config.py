"""EASE's keys; defaults are the official ``exps/ease*.json`` (identical to PILOT's)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cl_bench.config import MethodConfig, option
from cl_bench.registry import STRATEGIES, StrategyEntry

__all__ = ["EaseConfig"]


@dataclass
class EaseConfig(MethodConfig):
    adapter_dim: int = option(64, "adapter bottleneck (ffn_num)", minimum=1)
    adapter_scale: float = option(0.1, "adapter output scale (ffn_adapter_scalar)")
    adapter_dropout: float = option(0.1, "dropout inside the adapter during training", minimum=0.0)
    alpha: float = option(0.1, "weight of the other subspaces in the reweighted ensemble", minimum=0.0)
    momentum: float = option(0.9, "SGD momentum", minimum=0.0)
    batched_subspaces: bool = option(
        True, "evaluate adapter sets together, max_batch_sequences per pass (false: one full pass per set, as the reference)"
    )
    max_batch_sequences: int = option(
        0, "most token sequences per batched pass over adapter sets (0: auto, measured on first use "
        "for this model, device and batch, and cached)", minimum=0, semantic=False
    )


STRATEGIES.register(
    "ease",
    StrategyEntry(
        name="ease",
        config_cls=EaseConfig,
        builder="cl_bench.baselines.ease.strategy:EASE",
        presets=Path(__file__).with_name("presets.yaml"),
        summary="EASE (CVPR 2024): an adapter subspace per task, prototype complement, reweighted ensemble",
    ),
)
