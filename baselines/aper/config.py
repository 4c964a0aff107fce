"""APER's keys; defaults are APER-Adapter, the official ``exps/aper_adapter/*_5_5_*.json``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cl_bench.config import option
from cl_bench.registry import STRATEGIES, StrategyEntry

from ..first_session_config import PETL_KINDS, PetlKeys

__all__ = ["AperConfig"]


@dataclass
class AperConfig(PetlKeys):
    petl: str = option("adapter", "PETL module trained in the first experience: adapter (APER-Adapter), ssf, vpt_deep, "
                       "vpt_shallow, or full (APER-Finetune)", choices=PETL_KINDS)


STRATEGIES.register(
    "aper",
    StrategyEntry(
        name="aper",
        config_cls=AperConfig,
        builder="cl_bench.baselines.aper.strategy:APER",
        presets=Path(__file__).with_name("presets.yaml"),
        summary="APER (IJCV 2024): first-session PETL, cosine prototypes over [frozen ; adapted] ViT features",
    ),
)
