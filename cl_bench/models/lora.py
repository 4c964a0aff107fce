"""LoRA on slices of the stock timm ``Attention.qkv`` projection: what CL-LoRA, InfLoRA and SD-LoRA share.

The frozen fused ``qkv`` Linear is wrapped, never copied, so timm's ``Attention`` and ``Block``
forward passes run unchanged. Which of its three output slices get adapters is chosen per wrapper:
Q and V (CL-LoRA, SD-LoRA) or K and V (InfLoRA). A wrapper holds several adapter *pairs* (one
low-rank adapter per adapted slice) and a list of *groups*: each group is a list of terms
``(pair index, weight per adapted slice)`` whose outputs are summed. Groups are stacked along the
batch dimension, group-major, which lets CL-LoRA run all of its task branches in one call; InfLoRA
and SD-LoRA use one group that sums their task components.

Two kinds of folding:
- ``merge_for_inference`` (transient): without autograd, each group's terms are folded into an
  effective ``qkv`` weight and one matmul runs; same maths, no low-rank detour;
- ``fold_`` (permanent, InfLoRA's merge): a pair's update is added into a ``folded`` buffer of the
  wrapper, which the forward adds to the frozen weight. The backbone's own tensors are never
  written, so checkpoints that leave the backbone out still hold every merged task.
"""

from __future__ import annotations

from typing import Iterable, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SLICES",
    "Term",
    "orthogonal_rows_",
    "LowRankAdapter",
    "SliceAdapters",
    "LoRAQKV",
    "inject_lora",
    "lora_wrappers",
    "count_trainable",
]

#: Output slices of the fused projection, in timm's order.
SLICES = ("q", "k", "v")

#: A weight of a term: a float, or a 0-d tensor (CL-LoRA's block weights, SD-LoRA's magnitudes).
Weight = Union[float, torch.Tensor]
#: ``(pair index, weight of each adapted slice in the wrapper's slice order)``.
Term = tuple  # tuple[int, Weight, ...]


@torch.no_grad()
def orthogonal_rows_(weight: torch.Tensor) -> torch.Tensor:
    """Fill an (r, d) weight with orthonormal rows: ``Q, _ = qr(rand(d, r)); W = Q.T``, from
    *uniform* noise as in CL-LoRA's reference (``Adapter_lora``)."""
    rank, dim = weight.shape
    q, _ = torch.linalg.qr(torch.rand(dim, rank))
    return weight.copy_(q.T)


class LowRankAdapter(nn.Module):
    """``up(down(h))``, with no alpha/r scaling (none of the three references has one).

    ``down`` (d -> r) starts with orthonormal rows (``orthogonal_down``, CL-LoRA) or nn.Linear's
    kaiming-uniform(a=sqrt 5) (SD-LoRA; InfLoRA overwrites it with its designed matrix); ``up``
    (r -> d) starts at zero. The references' names for the two differ: see their specs.
    """

    def __init__(self, dim: int, rank: int, orthogonal_down: bool = True) -> None:
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim, bias=False)
        if orthogonal_down:
            orthogonal_rows_(self.down.weight)
        nn.init.zeros_(self.up.weight)

    @property
    def rank(self) -> int:
        return self.down.out_features

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(h))

    def delta_weight(self) -> torch.Tensor:
        """The (d, d) update ``up @ down`` that the adapter adds to a projection."""
        return self.up.weight @ self.down.weight


class SliceAdapters(nn.Module):
    """One adapter per adapted slice, as children named after the slice (``q``, ``k``, ``v``)."""

    def __init__(self, dim: int, rank: int, slices: Sequence[str], orthogonal_down: bool = True) -> None:
        super().__init__()
        self.slices = tuple(slices)
        for name in self.slices:
            self.add_module(name, LowRankAdapter(dim, rank, orthogonal_down))

    def adapters(self) -> list[LowRankAdapter]:
        return [getattr(self, name) for name in self.slices]


class LoRAQKV(nn.Module):
    """``qkv(h)`` plus, on each adapted slice, ``sum over terms w * A(B h)``, per batch group."""

    def __init__(self, qkv: nn.Linear, slices: Sequence[str] = ("q", "v"), orthogonal_down: bool = True) -> None:
        super().__init__()
        unknown = set(slices) - set(SLICES)
        if unknown or not slices or len(set(slices)) != len(slices):
            raise ValueError(f"slices must be distinct names among {SLICES}; got {tuple(slices)}")
        self.qkv = qkv
        self.dim = qkv.in_features
        self.slices = tuple(sorted(slices, key=SLICES.index))
        self.orthogonal_down = orthogonal_down
        self.pairs = nn.ModuleList()
        self.groups: list[list[Term]] = [[(0,) + (1.0,) * len(self.slices)]]
        self.merge_for_inference = True
        self.register_buffer("folded", None)

    @property
    def slice_positions(self) -> list[int]:
        return [SLICES.index(name) for name in self.slices]

    def add_pair(self, rank: int) -> SliceAdapters:
        pair = SliceAdapters(self.dim, rank, self.slices, self.orthogonal_down).to(self.qkv.weight.device)
        self.pairs.append(pair)
        return pair

    # -- permanent folding (InfLoRA's merge) ------------------------------------------------------
    @torch.no_grad()
    def fold_(self, index: int, weights: Sequence[float] | None = None) -> None:
        """Add pair ``index``'s update (times ``weights``, one per slice) into ``folded`` for good."""
        pair = self.pairs[index]
        weights = [1.0] * len(self.slices) if weights is None else list(weights)
        if self.folded is None:
            w = self.qkv.weight
            self.folded = torch.zeros(len(self.slices), self.dim, self.dim, dtype=w.dtype, device=w.device)
        for i, (adapter, w) in enumerate(zip(pair.adapters(), weights)):
            self.folded[i] += adapter.delta_weight() * w

    def base_weight(self) -> torch.Tensor:
        """The frozen ``qkv`` weight with the folded updates added."""
        if self.folded is None:
            return self.qkv.weight
        d = self.dim
        parts = list(self.qkv.weight.split(d))
        for i, position in enumerate(self.slice_positions):
            parts[position] = parts[position] + self.folded[i]
        return torch.cat(parts)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        incoming = state_dict.get(prefix + "folded")
        if incoming is not None and self.folded is None:
            self.folded = torch.empty_like(incoming, device=self.qkv.weight.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- forward ----------------------------------------------------------------------------------
    def _base(self, h: torch.Tensor) -> torch.Tensor:
        return self.qkv(h) if self.folded is None else F.linear(h, self.base_weight(), self.qkv.bias)

    def _with_deltas(self, out: torch.Tensor, deltas: Sequence[torch.Tensor]) -> torch.Tensor:
        d = self.dim
        chunks = [out[..., i * d: (i + 1) * d] for i in range(3)]
        for position, delta in zip(self.slice_positions, deltas):
            chunks[position] = chunks[position] + delta
        return torch.cat(chunks, dim=-1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        n_groups = len(self.groups)
        if not torch.is_grad_enabled() and self.merge_for_inference:
            return self._merged(h, n_groups)
        out = self._base(h)
        if n_groups == 1 and not self.groups[0]:
            return out
        if n_groups == 1:
            return self._with_deltas(out, self._group_deltas(h, self.groups[0]))
        d = self.dim
        terms_per_group = {len(group) for group in self.groups}
        if terms_per_group != {1}:
            raise ValueError("several batch groups need exactly one term each")
        hg = h.reshape(n_groups, -1, d)
        terms = [group[0] for group in self.groups]
        pairs = [self.pairs[term[0]] for term in terms]
        deltas = []
        for k, name in enumerate(self.slices):
            weight = self._weights(terms, k + 1, h).view(n_groups, 1, 1)
            deltas.append(self._batched_low_rank(hg, [getattr(p, name) for p in pairs]) * weight)
        og = self._with_deltas(out.reshape(n_groups, -1, 3 * d), deltas)
        return og.reshape(out.shape)

    def _group_deltas(self, h: torch.Tensor, group: Sequence[Term]) -> list[torch.Tensor]:
        """Per adapted slice, the group's summed LoRA outputs. One term: ``A(B h) * w``; several:
        one pass through the concatenated factors, each term's weight on its up-projection columns."""
        deltas = []
        for k, name in enumerate(self.slices):
            adapters = [getattr(self.pairs[term[0]], name) for term in group]
            if len(group) == 1:
                weight = group[0][k + 1]
                delta = adapters[0](h)
                # a weight of exactly 1 (CL-LoRA's shared adapters) is skipped: x * 1.0 == x, bit for bit
                deltas.append(delta if isinstance(weight, (int, float)) and weight == 1 else delta * weight)
                continue
            down = torch.cat([a.down.weight for a in adapters])
            up = torch.cat([a.up.weight * self._as_weight(term[k + 1], h) for a, term in zip(adapters, group)], dim=1)
            deltas.append(F.linear(F.linear(h, down), up))
        return deltas

    @staticmethod
    def _as_weight(value: Weight, like: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(value, dtype=like.dtype, device=like.device)

    @staticmethod
    def _weights(terms: Sequence[Term], which: int, like: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.as_tensor(t[which], dtype=like.dtype, device=like.device) for t in terms])

    @staticmethod
    def _batched_low_rank(hg: torch.Tensor, adapters: Sequence[LowRankAdapter]) -> torch.Tensor:
        downs = torch.stack([a.down.weight for a in adapters])  # (G, r, d)
        ups = torch.stack([a.up.weight for a in adapters])  # (G, d, r)
        return torch.bmm(torch.bmm(hg, downs.transpose(1, 2)), ups.transpose(1, 2))

    def effective_weight(self, group: Sequence[Term]) -> torch.Tensor:
        """The (3d, d) weight one group's terms amount to: the frozen (and folded) weight plus updates."""
        d = self.dim
        base = self.base_weight()
        delta = torch.zeros_like(base)
        for k, position in enumerate(self.slice_positions):
            for j, term in enumerate(group):
                update = getattr(self.pairs[term[0]], self.slices[k]).delta_weight() * term[k + 1]
                if j == 0:
                    delta[position * d: (position + 1) * d] = update
                else:
                    delta[position * d: (position + 1) * d] += update
        return base + delta

    def _merged(self, h: torch.Tensor, n_groups: int) -> torch.Tensor:
        d = self.dim
        if n_groups == 1 and not self.groups[0]:
            return self._base(h)
        weights = [self.effective_weight(group) for group in self.groups]
        if n_groups == 1:
            return nn.functional.linear(h, weights[0], self.qkv.bias)
        hg = h.reshape(n_groups, -1, d)
        out = torch.bmm(hg, torch.stack(weights).transpose(1, 2))
        if self.qkv.bias is not None:
            out = out + self.qkv.bias
        return out.reshape(h.shape[:-1] + (3 * d,))


def inject_lora(vit: nn.Module, slices: Sequence[str], blocks: Iterable[int] | None = None,
                orthogonal_down: bool = True) -> list[LoRAQKV]:
    """Wrap ``attn.qkv`` of the chosen blocks (all by default) of a timm ViT; returns the wrappers."""
    chosen = range(len(vit.blocks)) if blocks is None else blocks
    wrappers = []
    for index in chosen:
        attn = vit.blocks[index].attn
        attn.qkv = LoRAQKV(attn.qkv, slices, orthogonal_down)
        wrappers.append(attn.qkv)
    return wrappers


def lora_wrappers(vit: nn.Module) -> list[LoRAQKV]:
    """The wrapped ``qkv`` projections of a ViT, in block order."""
    return [block.attn.qkv for block in vit.blocks if isinstance(block.attn.qkv, LoRAQKV)]


def count_trainable(module: nn.Module, exclude: Iterable[nn.Module] = ()) -> int:
    """Trainable numbers of ``module``, without those of the ``exclude`` modules (e.g. a head)."""
    skip = {id(p) for m in exclude for p in m.parameters()}
    return sum(p.numel() for p in module.parameters() if p.requires_grad and id(p) not in skip)
