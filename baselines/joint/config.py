"""Joint's keys (the upper bound): Finetune's network and budget, trained once on every class."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cl_bench.registry import STRATEGIES, StrategyEntry

from ..finetune.config import ReferenceRowKeys

__all__ = ["JointConfig"]


@dataclass
class JointConfig(ReferenceRowKeys):
    pass


STRATEGIES.register(
    "joint",
    StrategyEntry(
        name="joint",
        config_cls=JointConfig,
        builder="cl_bench.baselines.joint.strategy:Joint",
        presets=Path(__file__).with_name("presets.yaml"),
        summary="Joint (upper bound): the same network trained once on the union of all experiences",
    ),
)
