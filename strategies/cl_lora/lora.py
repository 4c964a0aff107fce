"""LoRA on the Q and V slices of the stock timm ``Attention.qkv`` projection (CL-LoRA's view of
the shared ``cl_bench.models.lora``).

A wrapper holds several adapter pairs; ``route`` says which pair (and which two scalar block
weights) each group of the batch uses. Groups are stacked along the batch dimension, group-major,
which lets CL-LoRA run all of its task branches in one call.
"""

from __future__ import annotations

from typing import Union

import torch
from torch import nn

from cl_bench.models.lora import LoRAQKV, LowRankAdapter, SliceAdapters, orthogonal_rows_

__all__ = ["LowRankAdapter", "QVAdapterPair", "QVLoRAQKV", "orthogonal_rows_", "Route"]

#: (pair index, Q weight, V weight); weights are floats or 0-d tensors (CL-LoRA's block weights).
Route = tuple[int, Union[float, torch.Tensor], Union[float, torch.Tensor]]


class QVAdapterPair(SliceAdapters):
    """A Q adapter and a V adapter, both with orthonormal down rows and zero up."""

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__(dim, rank, ("q", "v"))


class QVLoRAQKV(LoRAQKV):
    """``qkv(h) + [w_q * A_q(B_q h), 0, w_v * A_v(B_v h)]`` per batch group, one pair per group."""

    def __init__(self, qkv: nn.Linear) -> None:
        super().__init__(qkv, ("q", "v"))

    def add_pair(self, rank: int) -> QVAdapterPair:
        pair = QVAdapterPair(self.dim, rank).to(self.qkv.weight.device)
        self.pairs.append(pair)
        return pair

    @property
    def route(self) -> list[Route]:
        return [group[0] for group in self.groups]

    @route.setter
    def route(self, route: list[Route]) -> None:
        self.groups = [[term] for term in route]
