"""Run a stock timm ``VisionTransformer`` in pieces, with its own modules.

Methods that branch inside the network (CL-LoRA's shared half, prompt insertion) call these
instead of ``vit.forward``; composed over all blocks they equal ``vit.forward`` for a model
built with ``num_classes=0, global_pool='token'``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["embed_tokens", "run_blocks", "cls_feature", "branch_sequences_per_pass", "GPU_BRANCH_SEQUENCES"]

#: Token sequences per batched pass over a method's branches (CL-LoRA tasks, EASE adapter sets) on a
#: GPU. On a CPU, sweeps/bench_efficiency.py measured batched branches slower than one pass per
#: branch (EASE 0.66x, CL-LoRA's shared-half saving lost at 20 tasks), so there it is one branch.
GPU_BRANCH_SEQUENCES = 1024


def embed_tokens(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Patch embedding, CLS token and position embedding (timm ``forward_features`` up to the blocks)."""
    x = vit.patch_embed(x)
    x = vit._pos_embed(x)
    x = vit.patch_drop(x)
    return vit.norm_pre(x)


def run_blocks(vit: nn.Module, tokens: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
    for block in vit.blocks[start:stop]:
        tokens = block(tokens)
    return tokens


def cls_feature(vit: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The CLS token after the final LayerNorm: the feature every method of the suite uses."""
    return vit.norm(tokens)[:, 0]


def branch_sequences_per_pass(requested: int, device: torch.device | str) -> int:
    """``requested``; for 0 (auto), the faster measured choice on ``device`` (1: one branch per pass)."""
    if requested > 0:
        return requested
    return GPU_BRANCH_SEQUENCES if torch.device(device).type == "cuda" else 1
