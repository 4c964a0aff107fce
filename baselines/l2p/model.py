"""L2P's prompt pool, selection and key-matching term (spec baselines.md §2)."""

from __future__ import annotations

import torch
from torch import nn

from cl_bench.models.prompting import PromptedViT

__all__ = ["l2_normalize", "select_prompts", "batchwise_vote", "key_matching_similarity", "L2PNet"]

#: Bound of the uniform init of prompts and keys (l2p-pytorch ``prompt_init='uniform'``).
PROMPT_INIT_BOUND = 1.0


def l2_normalize(x: torch.Tensor, dim: int, epsilon: float = 1e-12) -> torch.Tensor:
    """``x * rsqrt(max(sum(x^2), eps))``, the reference's normalisation."""
    square_sum = torch.sum(x ** 2, dim=dim, keepdim=True)
    return x * torch.rsqrt(torch.clamp(square_sum, min=epsilon))


def batchwise_vote(idx: torch.Tensor, pool_size: int, top_k: int) -> torch.Tensor:
    """The ``top_k`` most frequent prompt ids of the batch, for every image (PILOT's tie-breaking:
    ``topk`` over per-id counts of the sorted unique ids, padded to the pool size)."""
    prompt_id, id_counts = torch.unique(idx, return_counts=True, sorted=True)
    if prompt_id.shape[0] < pool_size:
        pad = pool_size - prompt_id.shape[0]
        prompt_id = torch.cat([prompt_id, torch.full((pad,), int(idx.min()), device=idx.device, dtype=prompt_id.dtype)])
        id_counts = torch.cat([id_counts, torch.zeros(pad, device=idx.device, dtype=id_counts.dtype)])
    _, major = torch.topk(id_counts, k=top_k)
    return prompt_id[major].expand(idx.shape[0], -1)


def select_prompts(query: torch.Tensor, keys: torch.Tensor, top_k: int, batchwise: bool) -> torch.Tensor:
    """Indices (B, top_k) of the keys most cosine-similar to each query."""
    similarity = l2_normalize(query, dim=1) @ l2_normalize(keys, dim=1).t()
    _, idx = torch.topk(similarity, k=top_k, dim=1)
    return batchwise_vote(idx, keys.shape[0], top_k) if batchwise else idx


def key_matching_similarity(query: torch.Tensor, keys: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``sum_{b,k} cos(q_b, key[idx_bk]) / B``; the loss subtracts lambda times this."""
    selected = l2_normalize(keys, dim=1)[idx]
    return torch.sum(selected * l2_normalize(query, dim=1).unsqueeze(1)) / query.shape[0]


class L2PNet(nn.Module):
    def __init__(self, vit: nn.Module, n_classes: int, pool_size: int, prompt_length: int, top_k: int,
                 batchwise: bool, batchwise_eval: bool) -> None:
        super().__init__()
        dim = vit.embed_dim
        self.prompted = PromptedViT(vit)
        self.prompts = nn.Parameter(torch.empty(pool_size, prompt_length, dim).uniform_(-PROMPT_INIT_BOUND, PROMPT_INIT_BOUND))
        self.keys = nn.Parameter(torch.empty(pool_size, dim).uniform_(-PROMPT_INIT_BOUND, PROMPT_INIT_BOUND))
        self.head = nn.Linear(dim, n_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)  # timm's ViT head init in l2p-pytorch
        nn.init.zeros_(self.head.bias)
        self.top_k = top_k
        self.batchwise, self.batchwise_eval = batchwise, batchwise_eval
        self.prompt_tokens = top_k * prompt_length

    def forward(self, x: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits over all classes, the key-matching similarity and the chosen prompt ids."""
        idx = select_prompts(query, self.keys, self.top_k, self.batchwise if self.training else self.batchwise_eval)
        prompts = self.prompts[idx].reshape(x.shape[0], self.prompt_tokens, -1)
        tokens = self.prompted.forward_tokens(x, prompts=prompts)
        feature = tokens[:, 1: 1 + self.prompt_tokens].mean(dim=1)  # the mean of the prompt outputs
        return self.head(feature), key_matching_similarity(query, self.keys, idx), idx
