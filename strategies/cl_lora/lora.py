"""LoRA on the Q and V slices of the stock timm ``Attention.qkv`` projection.

The frozen fused ``qkv`` Linear is wrapped, never copied, so timm's ``Attention`` and ``Block``
forward passes run unchanged. A wrapper holds several adapter pairs; ``route`` says which pair
(and which two scalar block weights) each group of the batch uses. Groups are stacked along the
batch dimension, group-major, which lets CL-LoRA run all of its task branches in one call.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn

__all__ = ["LowRankAdapter", "QVAdapterPair", "QVLoRAQKV", "orthogonal_rows_", "Route"]

#: (pair index, Q weight, V weight); weights are floats or 0-d tensors (CL-LoRA's block weights).
Route = tuple[int, Union[float, torch.Tensor], Union[float, torch.Tensor]]


@torch.no_grad()
def orthogonal_rows_(weight: torch.Tensor) -> torch.Tensor:
    """Fill an (r, d) weight with orthonormal rows: ``Q, _ = qr(rand(d, r)); W = Q.T``, from
    *uniform* noise as in the reference (``Adapter_lora``)."""
    rank, dim = weight.shape
    q, _ = torch.linalg.qr(torch.rand(dim, rank))
    return weight.copy_(q.T)


class LowRankAdapter(nn.Module):
    """``up(down(h))``, with no alpha/r scaling (the reference has none).

    Our ``down`` (d -> r, orthonormal rows) is the reference's ``lora_B``; our ``up`` (r -> d,
    zeros) is its ``lora_A``: the reference names them the other way round.
    """

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim, bias=False)
        orthogonal_rows_(self.down.weight)
        nn.init.zeros_(self.up.weight)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(h))

    def delta_weight(self) -> torch.Tensor:
        """The (d, d) update ``up @ down`` that the adapter adds to a projection."""
        return self.up.weight @ self.down.weight


class QVAdapterPair(nn.Module):
    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.q = LowRankAdapter(dim, rank)
        self.v = LowRankAdapter(dim, rank)


class QVLoRAQKV(nn.Module):
    """``qkv(h) + [w_q * A_q(B_q h), 0, w_v * A_v(B_v h)]`` per batch group.

    ``merge_for_inference``: without autograd, fold each group's adapters into an effective
    (3d, d) weight and run one batched matmul; same maths, no low-rank detour.
    """

    def __init__(self, qkv: nn.Linear) -> None:
        super().__init__()
        self.qkv = qkv
        self.dim = qkv.in_features
        self.pairs = nn.ModuleList()
        self.route: list[Route] = [(0, 1.0, 1.0)]
        self.merge_for_inference = True

    def add_pair(self, rank: int) -> QVAdapterPair:
        pair = QVAdapterPair(self.dim, rank).to(self.qkv.weight.device)
        self.pairs.append(pair)
        return pair

    @staticmethod
    def _weights(route: Sequence[Route], which: int, like: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.as_tensor(r[which], dtype=like.dtype, device=like.device) for r in route])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        groups = len(self.route)
        if not torch.is_grad_enabled() and self.merge_for_inference:
            return self._merged(h, groups)
        out = self.qkv(h)
        d = self.dim
        if groups == 1:
            index, w_q, w_v = self.route[0]
            pair = self.pairs[index]
            q_delta, v_delta = pair.q(h) * w_q, pair.v(h) * w_v
            return torch.cat([out[..., :d] + q_delta, out[..., d: 2 * d], out[..., 2 * d:] + v_delta], dim=-1)
        hg = h.reshape(groups, -1, d)
        pairs = [self.pairs[r[0]] for r in self.route]
        w_q = self._weights(self.route, 1, h).view(groups, 1, 1)
        w_v = self._weights(self.route, 2, h).view(groups, 1, 1)
        q_delta = self._batched_low_rank(hg, [p.q for p in pairs]) * w_q
        v_delta = self._batched_low_rank(hg, [p.v for p in pairs]) * w_v
        og = out.reshape(groups, -1, 3 * d)
        og = torch.cat([og[..., :d] + q_delta, og[..., d: 2 * d], og[..., 2 * d:] + v_delta], dim=-1)
        return og.reshape(out.shape)

    @staticmethod
    def _batched_low_rank(hg: torch.Tensor, adapters: Sequence[LowRankAdapter]) -> torch.Tensor:
        downs = torch.stack([a.down.weight for a in adapters])  # (G, r, d)
        ups = torch.stack([a.up.weight for a in adapters])  # (G, d, r)
        return torch.bmm(torch.bmm(hg, downs.transpose(1, 2)), ups.transpose(1, 2))

    def _merged(self, h: torch.Tensor, groups: int) -> torch.Tensor:
        d = self.dim
        weights = []
        for index, w_q, w_v in self.route:
            pair = self.pairs[index]
            delta = torch.zeros_like(self.qkv.weight)
            delta[:d] = pair.q.delta_weight() * w_q
            delta[2 * d:] = pair.v.delta_weight() * w_v
            weights.append(self.qkv.weight + delta)
        if groups == 1:
            return nn.functional.linear(h, weights[0], self.qkv.bias)
        hg = h.reshape(groups, -1, d)
        out = torch.bmm(hg, torch.stack(weights).transpose(1, 2))
        if self.qkv.bias is not None:
            out = out + self.qkv.bias
        return out.reshape(h.shape[:-1] + (3 * d,))
