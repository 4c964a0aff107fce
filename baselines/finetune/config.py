"""Finetune's keys (the lower bound); defaults are PILOT's ``exps/finetune.json``: the whole ViT and a
linear head, SGD, weight decay 5e-4 in the first experience and 2e-4 later."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cl_bench.config import option
from cl_bench.registry import STRATEGIES, StrategyEntry

from ..first_session_config import PETL_KINDS, PetlKeys

__all__ = ["TRAINABLE_PARTS", "LOSS_COLUMNS", "ReferenceRowKeys", "FinetuneConfig"]

TRAINABLE_PARTS = ("head", *PETL_KINDS)
#: ``current``: cross-entropy over the current experience's columns, labels shifted (PILOT's ``finetune``
#: from its second task on); ``seen``: over every column seen so far (textbook sequential fine-tuning).
LOSS_COLUMNS = ("current", "seen")


@dataclass
class ReferenceRowKeys(PetlKeys):
    trainable: str = option("full", "what trains: full (the whole ViT), head (a linear probe), or one PETL module, "
                            "to match the methods being bounded", choices=TRAINABLE_PARTS)
    lr_schedule: str = option("constant", "constant (PILOT: its milestones 60/120/170 are never reached in 20 epochs) or "
                              "cosine (per epoch, to 0)", choices=("constant", "cosine"))


@dataclass
class FinetuneConfig(ReferenceRowKeys):
    later_weight_decay: float = option(2e-4, "weight decay from the second experience on (PILOT; the first uses weight_decay)",
                                       minimum=0.0)
    loss_columns: str = option("seen", "cross-entropy over every seen class (seen, no mechanism at all) or over the "
                               "current experience's classes only (current, PILOT's finetune)", choices=LOSS_COLUMNS)


STRATEGIES.register(
    "finetune",
    StrategyEntry(
        name="finetune",
        config_cls=FinetuneConfig,
        builder="cl_bench.baselines.finetune.strategy:Finetune",
        presets=Path(__file__).with_name("presets.yaml"),
        summary="Finetune (lower bound): the same network trained experience after experience, no continual-learning mechanism",
    ),
)
