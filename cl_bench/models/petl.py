"""Parameter-efficient tuning modules injected into the stock timm ViT by hooks: SSF and VPT.

Both keep timm's own module names and state-dict keys; their parameters sit on the module they
modify (``ssf_scale``/``ssf_shift``, ``vpt_prompt``, the reference's names). Every injected module
carries a ``petl_enabled`` flag: with all flags off (``petl_disabled``) the ViT computes exactly
the pretrained ViT, which is how APER reads its frozen branch from the same weights.

- **SSF** (Lian et al. 2022; RanPAC's and APER's ``vision_transformer_ssf.py``): ``y * gamma + beta``
  on the last axis after the patch embedding, norm1, qkv, attention proj, norm2, fc1 (before the
  activation), fc2, and the final norm; gamma ~ N(1, 0.02^2), beta ~ N(0, 0.02^2).
- **VPT** as APER's and RanPAC's ``vpt.py`` code (not the VPT paper): zero-initialised tokens
  appended *after* the patch tokens, no position embedding. Deep: a fresh set before every block,
  dropped after it. Shallow: one set appended before block 0 and dropped after the last block.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

__all__ = ["SSF_INIT_STD", "add_ssf", "ssf_sites", "add_vpt", "petl_modules", "set_petl_enabled", "petl_disabled"]

#: Standard deviation of SSF's scale (around 1) and shift (around 0) at initialisation.
SSF_INIT_STD = 0.02


def _scale_shift(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
    if not module.petl_enabled:
        return None
    return output * module.ssf_scale + module.ssf_shift


def ssf_sites(vit: nn.Module) -> list[tuple[nn.Module, int]]:
    """Modules whose output SSF scales and shifts, with the output width, in the reference's order."""
    sites: list[tuple[nn.Module, int]] = [(vit.patch_embed.norm, vit.embed_dim)]
    for block in vit.blocks:
        attn, mlp = block.attn, block.mlp
        sites += [(block.norm1, block.norm1.normalized_shape[0]), (attn.qkv, attn.qkv.out_features),
                  (attn.proj, attn.proj.out_features), (block.norm2, block.norm2.normalized_shape[0]),
                  (mlp.fc1, mlp.fc1.out_features), (mlp.fc2, mlp.fc2.out_features)]
    return sites + [(vit.norm, vit.embed_dim)]


def add_ssf(vit: nn.Module) -> list[nn.Parameter]:
    """Inject SSF into ``vit`` in place; returns its parameters (205,824 on ViT-B/16)."""
    params = []
    for module, width in ssf_sites(vit):
        module.ssf_scale = nn.Parameter(torch.empty(width).normal_(mean=1.0, std=SSF_INIT_STD))
        module.ssf_shift = nn.Parameter(torch.empty(width).normal_(std=SSF_INIT_STD))
        module.petl_enabled = True
        module.register_forward_hook(_scale_shift)
        params += [module.ssf_scale, module.ssf_shift]
    return params


def _append_prompt(block: nn.Module, args: tuple) -> tuple | None:
    if not block.petl_enabled:
        return None
    x = args[0]
    prompt = block.vpt_prompt.expand(x.shape[0], -1, -1)
    return (torch.cat([x, prompt], dim=1), *args[1:])


def _drop_prompt(block: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor | None:
    if not block.petl_enabled:
        return None
    return output[:, : -block.vpt_drop]


def add_vpt(vit: nn.Module, tokens: int, deep: bool) -> list[nn.Parameter]:
    """Inject VPT-Deep (a set per block) or VPT-Shallow (one set) into ``vit`` in place."""
    blocks = list(vit.blocks)
    params = []
    for index, block in enumerate(blocks):
        block.petl_enabled = True
        if deep or index == 0:
            block.vpt_prompt = nn.Parameter(torch.zeros(1, tokens, vit.embed_dim))
            block.register_forward_pre_hook(_append_prompt)
            params.append(block.vpt_prompt)
        if deep or index == len(blocks) - 1:
            block.vpt_drop = tokens
            block.register_forward_hook(_drop_prompt)
    return params


def petl_modules(model: nn.Module) -> Iterator[nn.Module]:
    """Every module with a ``petl_enabled`` switch (SSF sites, VPT blocks, adapter blocks)."""
    return (m for m in model.modules() if hasattr(m, "petl_enabled"))


def set_petl_enabled(model: nn.Module, enabled: bool) -> None:
    for module in petl_modules(model):
        module.petl_enabled = enabled


@contextmanager
def petl_disabled(model: nn.Module) -> Iterator[None]:
    """Run ``model`` as the pretrained network it was built from, then switch PETL back on."""
    set_petl_enabled(model, False)
    try:
        yield
    finally:
        set_petl_enabled(model, True)
