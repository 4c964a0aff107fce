"""RanPAC's keys; defaults are the official CIFAR-100 row (``args/cifar224_publish.csv`` ID 7): the
adapter in the first experience, M = 10,000, a linear classifier, float32 as the reference."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cl_bench.config import option
from cl_bench.registry import STRATEGIES, StrategyEntry

from ..first_session_config import PETL_KINDS, PetlKeys

__all__ = ["RIDGE_DTYPES", "RanPACConfig"]

RIDGE_DTYPES = ("float32", "float64")


@dataclass
class RanPACConfig(PetlKeys):
    petl: str = option("adapter", "PETL module trained in the first experience (official: adapter on CIFAR, ssf on ImageNet-R)",
                       choices=PETL_KINDS)
    projection_size: int = option(10_000, "random projection width M (G alone holds M^2 floats: 400 MB at 10,000 in float32)",
                                  minimum=1)
    ridge_dtype: str = option("float32", "precision of H, G, Q and the solves (float32: the reference; float64: stable)",
                              choices=RIDGE_DTYPES)
    ridge_lambda: float = option(0.0, "fixed ridge lambda; 0: the reference's search over 1e-8..1e8 per experience", minimum=0.0)
    ridge_ignore_nan: bool = option(False, "a NaN validation loss never wins the lambda search (the reference's np.argmin picks it)")
    cosine_classifier: bool = option(False, "PILOT's cosine scores cos(H, W_o) instead of the official linear H W_o^T")


STRATEGIES.register(
    "ranpac",
    StrategyEntry(
        name="ranpac",
        config_cls=RanPACConfig,
        builder="cl_bench.baselines.ranpac.strategy:RanPAC",
        presets=Path(__file__).with_name("presets.yaml"),
        summary="RanPAC (NeurIPS 2023): first-session PETL, then a frozen random projection and streaming ridge regression",
    ),
)
