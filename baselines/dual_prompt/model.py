"""DualPrompt's prompts, selection and prefix layout (spec more_baselines_prompt_analytic.md §2).

- G-prompt ``(len(g_layers), 2, L_g, D)``: key/value prefixes shared by every task, in blocks 0-1;
- E-prompt pool ``(len(e_layers), 2, M, L_e, D)`` with one key per entry ``(M, D)`` shared by the
  E-layers, in blocks 2-4. ``D = heads * head_dim``: the last axis is the reference's
  ``(heads, head_dim)`` flattened, which is how ``PrefixAttention`` splits it again.
- Training forces the true task's E-prompt; testing takes the top-1 key by cosine to the frozen
  ViT's CLS query (optionally a batch vote, or only the keys trained so far).
- The E-prefix gather permutes ``(kv, batch)`` to ``(batch, kv)`` before merging, so each sample gets
  its own entry's key and value prefixes (``prefix_layout='per_sample'``). ``'batch_mixed'`` keeps
  the PyTorch port's and PILOT's reshape without the permute, a bug kept for parity: with B samples,
  sample b receives the flat ``(kv, batch)`` slots 2b and 2b+1, i.e. the key halves of samples 2b
  and 2b+1 for b < B/2 and their value halves for b >= B/2.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from cl_bench.models.prompting import PromptedViT

from ..l2p.model import batchwise_vote, key_matching_similarity, l2_normalize
from .config import PREFIX_LAYOUTS, PROMPT_INITS

__all__ = ["PREFIX_LAYOUTS", "PROMPT_INITS", "init_prompt_", "gather_e_prefixes", "select_e_prompt",
           "pull_constraint_similarity", "keep_columns", "DualPromptNet"]



def init_prompt_(tensor: torch.Tensor, init: str) -> torch.Tensor:
    if init == "pytorch":
        tensor.normal_()
        return tensor.uniform_(-1.0, 1.0)
    if init == "jax":
        return tensor.uniform_(0.0, 0.01)
    raise ValueError(f"unknown prompt init {init!r}; allowed: {', '.join(PROMPT_INITS)}")


def gather_e_prefixes(e_prompt: torch.Tensor, idx: torch.Tensor, layout: str = "per_sample") -> torch.Tensor:
    """Per E-layer, per sample, the (key, value) prefixes of the chosen pool entries.

    ``e_prompt`` is (layers, 2, M, L, D) and ``idx`` (B, k); returns (layers, B, 2, k*L, D).
    """
    layers, kv, _, length, dim = e_prompt.shape
    batch, k = idx.shape
    gathered = e_prompt[:, :, idx]  # (layers, 2, B, k, L, D)
    if layout == "per_sample":
        gathered = gathered.permute(0, 2, 1, 3, 4, 5)
    elif layout != "batch_mixed":
        raise ValueError(f"unknown prefix layout {layout!r}; allowed: {', '.join(PREFIX_LAYOUTS)}")
    return gathered.reshape(layers, batch, kv, k * length, dim)


def select_e_prompt(query: torch.Tensor, keys: torch.Tensor, *, task: int | None = None, n_trained: int | None = None,
                    batchwise: bool = False) -> torch.Tensor:
    """E-prompt ids (B, 1): the true task's in training (``task``), else the top-1 key by cosine.

    ``n_trained`` restricts the match to keys ``0..n_trained-1`` (off in the reference, where every
    key competes, trained or not); ``batchwise`` gives every sample the batch's most frequent id.
    """
    if task is not None:
        return torch.full((query.shape[0], 1), task, dtype=torch.long, device=query.device)
    candidates = keys if n_trained is None else keys[:n_trained]
    similarity = l2_normalize(query, dim=1) @ l2_normalize(candidates, dim=1).t()
    idx = similarity.argmax(dim=1, keepdim=True)
    return batchwise_vote(idx, candidates.shape[0], 1) if batchwise else idx


def pull_constraint_similarity(query: torch.Tensor, keys: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``(1/B) sum_b cos(q_b, k_{idx_b})``; the loss subtracts ``lambda`` times it."""
    return key_matching_similarity(query, keys, idx)


def keep_columns(logits: torch.Tensor, columns: slice | torch.Tensor) -> torch.Tensor:
    """``logits`` with every column outside ``columns`` set to -inf (the training head mask)."""
    masked = torch.full_like(logits, float("-inf"))
    masked[:, columns] = logits[:, columns]
    return masked


class DualPromptNet(nn.Module):
    """The frozen ViT with G- and E-prefixes, the E-prompt keys, and a linear head over all classes."""

    def __init__(self, vit: nn.Module, n_classes: int, pool_size: int, g_layers: Sequence[int] = (0, 1),
                 e_layers: Sequence[int] = (2, 3, 4), g_length: int = 5, e_length: int = 5,
                 prefix_layout: str = "per_sample", prompt_init: str = "pytorch") -> None:
        super().__init__()
        if set(g_layers) & set(e_layers):
            raise ValueError(f"G layers {tuple(g_layers)} and E layers {tuple(e_layers)} overlap")
        if prefix_layout not in PREFIX_LAYOUTS:
            raise ValueError(f"unknown prefix layout {prefix_layout!r}; allowed: {', '.join(PREFIX_LAYOUTS)}")
        dim = vit.embed_dim
        self.g_layers, self.e_layers = list(g_layers), list(e_layers)
        self.prefix_layout = prefix_layout
        self.prompted = PromptedViT(vit, prefix_blocks=sorted(self.g_layers + self.e_layers))
        # The reference's creation order: G-prompt, E-prompt pool, keys.
        self.g_prompt = nn.Parameter(init_prompt_(torch.empty(len(self.g_layers), 2, g_length, dim), prompt_init))
        self.e_prompt = nn.Parameter(init_prompt_(torch.empty(len(self.e_layers), 2, pool_size, e_length, dim), prompt_init))
        self.keys = nn.Parameter(init_prompt_(torch.empty(pool_size, dim), prompt_init))
        self.head = nn.Linear(dim, n_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)  # timm's head init in the port and PILOT
        nn.init.zeros_(self.head.bias)

    @property
    def pool_size(self) -> int:
        return self.e_prompt.shape[2]

    @torch.no_grad()
    def copy_e_prompt(self, source: int, target: int) -> None:
        """A new task's E-prompt starts from the previous one (all E-layers, key and value); keys are not copied."""
        self.e_prompt[:, :, target] = self.e_prompt[:, :, source]

    def prefixes(self, idx: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        batch = idx.shape[0]
        out = {}
        for i, layer in enumerate(self.g_layers):
            out[layer] = tuple(self.g_prompt[i, kv].expand(batch, -1, -1) for kv in (0, 1))
        e = gather_e_prefixes(self.e_prompt, idx, self.prefix_layout)
        for i, layer in enumerate(self.e_layers):
            out[layer] = (e[i, :, 0], e[i, :, 1])
        return out

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Logits over all classes with E-prompts ``idx`` (B, 1), from the prompted CLS feature."""
        cls = self.prompted.forward_tokens(x, prefixes=self.prefixes(idx))[:, 0]
        return self.head(cls)
