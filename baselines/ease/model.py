"""EASE's network (spec baselines.md §4): one AdaptFormer-style parallel adapter set per task on the
stock timm ViT, class prototypes in every adapter subspace, the semantic-guided prototype
complement, and the reweighted subspace ensemble.

Adapter sets run per batch group: inputs stacked along the batch (group-major) each go through
their own set, so all subspaces of an image are computed in one batched pass (the reference
runs one full pass per set; the block passes are the same, the launches fewer).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cl_bench.models.branch_batching import BranchBatching, shape_key
from cl_bench.models.heads import CosineLinear
from cl_bench.models.vit_parts import cls_feature, embed_tokens, run_blocks

__all__ = ["ParallelAdapter", "AdapterBlock", "EaseNet", "complement_prototypes", "ensemble_logits"]


class ParallelAdapter(nn.Module):
    """``scale * up(dropout(relu(down(x))))``; starts as a zero map (AdaptFormer 'lora' init)."""

    def __init__(self, dim: int, bottleneck: int, scale: float, dropout: float) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        self.scale, self.dropout = scale, dropout
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.dropout(F.relu(self.down(x)), p=self.dropout, training=self.training)
        return self.up(hidden) * self.scale


class AdapterBlock(nn.Module):
    """A stock timm ``Block`` plus a parallel adapter beside its MLP:
    ``x = x + attn(norm1(x)); x = x + mlp(norm2(x)) + adapter(x)``."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.adapters = nn.ModuleList()
        self.route: list[int] = [0]

    def _adapt(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.route) == 1:
            return self.adapters[self.route[0]](x)
        groups = x.reshape(len(self.route), -1, *x.shape[1:])
        return torch.cat([self.adapters[i](g) for i, g in zip(self.route, groups)]).reshape(x.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        x = x + b.drop_path1(b.ls1(b.attn(b.norm1(x))))
        adapted = self._adapt(x)
        return x + b.drop_path2(b.ls2(b.mlp(b.norm2(x)))) + adapted


def complement_prototypes(prototypes: torch.Tensor, class_ranges: list[tuple[int, int]]) -> torch.Tensor:
    """Semantic-guided complement (``solve_sim_reset``): for each old task ``i`` and newer subspace
    ``j``, the prototypes of task ``i``'s classes in subspace ``j`` become a softmax-weighted sum of
    the prototypes of every class learned at or after task ``j``, the weights being cosine
    similarities measured in subspace ``i``. ``prototypes`` is (classes, subspaces, D)."""
    out = prototypes.clone()
    t = len(class_ranges) - 1
    total = class_ranges[-1][1]
    for i in range(t):
        old = slice(*class_ranges[i])
        for j in range(i + 1, t + 1):
            reference = slice(class_ranges[j][0], total)
            similarity = F.cosine_similarity(prototypes[old, i].unsqueeze(1), prototypes[reference, i].unsqueeze(0), dim=2)
            out[old, j] = F.softmax(similarity, dim=1) @ prototypes[reference, j]
    return out


def ensemble_logits(features: torch.Tensor, prototypes: torch.Tensor, class_ranges: list[tuple[int, int]], alpha: float) -> torch.Tensor:
    """``cos(f_i, p_ci) + alpha/t * sum_{j != i} cos(f_j, p_cj)`` for class ``c`` of task ``i``
    (``forward_reweight``); ``features`` is (subspaces, B, D), ``t`` the number of other subspaces."""
    n_sub = features.shape[0]
    f = F.normalize(features, dim=-1)
    p = F.normalize(prototypes[:, :n_sub], dim=-1)
    per_subspace = torch.einsum("sbd,csd->bcs", f, p)  # cos(f_j(x), p_cj)
    others = max(n_sub - 1, 1)
    logits = []
    for i, (start, stop) in enumerate(class_ranges):
        block = per_subspace[:, start:stop]
        diagonal = block[..., i]
        logits.append(diagonal + alpha / others * (block.sum(-1) - diagonal))
    return torch.cat(logits, dim=1)


class EaseNet(nn.Module):
    def __init__(self, vit: nn.Module, bottleneck: int, scale: float, dropout: float, max_batch_sequences: int = 1024,
                 device=None) -> None:
        """``max_batch_sequences``: token sequences per batched pass over adapter sets (0: measured on
        ``device`` on first use, see ``cl_bench.models.branch_batching``)."""
        super().__init__()
        self.batching = BranchBatching(max_batch_sequences, device)
        self.vit = vit.requires_grad_(False)
        self.bottleneck, self.scale, self.dropout = bottleneck, scale, dropout
        self.vit.blocks = nn.Sequential(*[AdapterBlock(b) for b in vit.blocks])
        self.proxy_head: CosineLinear | None = None
        self.register_buffer("prototypes", torch.zeros(0, 0, vit.embed_dim))
        self.class_ranges: list[tuple[int, int]] = []

    @property
    def adapter_blocks(self) -> list[AdapterBlock]:
        return list(self.vit.blocks)

    @property
    def n_sets(self) -> int:
        return len(self.adapter_blocks[0].adapters)

    def add_adapter_set(self) -> int:
        device = self.prototypes.device
        for block in self.adapter_blocks:
            block.adapters.append(ParallelAdapter(self.vit.embed_dim, self.bottleneck, self.scale, self.dropout).to(device))
        return self.n_sets - 1

    @property
    def max_batch_sequences(self) -> int:
        """The sequences per batched pass in use (0 until a measured choice is made)."""
        return self.batching.sequences_per_pass or 0

    @max_batch_sequences.setter
    def max_batch_sequences(self, value: int) -> None:
        self.batching = BranchBatching(value, self.batching.device)

    def set_trainable(self, current: int) -> None:
        self.requires_grad_(False)
        for block in self.adapter_blocks:
            block.adapters[current].requires_grad_(True)
        if self.proxy_head is not None:
            self.proxy_head.requires_grad_(True)

    def features(self, x: torch.Tensor, sets: list[int], batched: bool = True) -> torch.Tensor:
        """CLS features through each adapter set, shape (len(sets), B, D): batched passes of at most
        as many sets per call as ``self.batching`` chose, or one full pass per set as the reference runs them."""
        if len(sets) > 1 and not batched:
            return torch.cat([self.features(x, [s]) for s in sets])
        tokens = embed_tokens(self.vit, x)
        per_call = self.batching.branches_per_pass(x.shape[0], len(sets),
                                                   lambda: shape_key("ease adapter block", self.vit, tokens),
                                                   lambda k: self._one_block_pass(tokens, sets[0], k))
        if len(sets) > per_call:
            return torch.cat([self._features(tokens, sets[i: i + per_call]) for i in range(0, len(sets), per_call)])
        return self._features(tokens, sets)

    def _features(self, tokens: torch.Tensor, sets: list[int]) -> torch.Tensor:
        batch = tokens.shape[0]
        for block in self.adapter_blocks:
            block.route = list(sets)
        tokens = tokens.repeat(len(sets), 1, 1) if len(sets) > 1 else tokens
        return cls_feature(self.vit, run_blocks(self.vit, tokens)).view(len(sets), batch, -1)

    def _one_block_pass(self, tokens: torch.Tensor, adapter_set: int, groups: int):
        """The first block over ``groups`` stacked copies of one adapter set: what batching is timed on."""
        block = self.adapter_blocks[0]

        def run():
            block.route = [adapter_set] * groups
            return block(tokens.repeat(groups, 1, 1) if groups > 1 else tokens)
        return run

    def grow_prototypes(self, n_classes: int) -> None:
        """New rows for new classes and a new subspace column, zero-filled (``update_fc``)."""
        c, s, d = self.prototypes.shape
        grown = self.prototypes.new_zeros(n_classes, s + 1, d)
        grown[:c, :s] = self.prototypes
        self.prototypes = grown

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        incoming = state_dict.get(prefix + "prototypes")
        if incoming is not None:
            self.prototypes = torch.empty_like(incoming, device=self.prototypes.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
