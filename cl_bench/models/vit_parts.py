"""Run a stock timm ``VisionTransformer`` in pieces, with its own modules.

Methods that branch inside the network (CL-LoRA's shared half, prompt insertion) call these
instead of ``vit.forward``; composed over all blocks they equal ``vit.forward`` for a model
built with ``num_classes=0, global_pool='token'``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["embed_tokens", "run_blocks", "cls_feature"]


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
