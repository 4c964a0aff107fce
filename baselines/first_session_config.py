"""The keys of the PETL modules that RanPAC, APER and the reference rows share (light: no torch)."""

from __future__ import annotations

from dataclasses import dataclass

from cl_bench.config import MethodConfig, option

__all__ = ["PETL_KINDS", "PetlKeys"]

#: ``adapter`` (AdaptFormer, as EASE), ``ssf``, ``vpt_deep``, ``vpt_shallow`` (APER's VPT code), ``full`` (the whole ViT).
PETL_KINDS = ("adapter", "ssf", "vpt_deep", "vpt_shallow", "full")


@dataclass
class PetlKeys(MethodConfig):
    adapter_dim: int = option(64, "adapter bottleneck (ffn_num)", minimum=1)
    adapter_scale: float = option(0.1, "adapter output scale (ffn_adapter_scalar)")
    adapter_dropout: float = option(0.1, "dropout inside the adapter during training", minimum=0.0)
    vpt_tokens: int = option(5, "VPT prompt tokens per block (deep) or in all (shallow)", minimum=1)
    momentum: float = option(0.9, "SGD momentum", minimum=0.0)
