"""What RanPAC and APER share (spec more_baselines_prompt_analytic.md §3.2, §4.1, §4.3): the
pretrained ViT adapted once, in the first experience, through one PETL module and a throw-away
cosine head, then frozen. The reference rows (Joint, Finetune) use the same PETL choices.

PETL kinds (``PETL_KINDS``), injected into the stock timm ViT:
- ``adapter``: the AdaptFormer adapter of EASE (bottleneck 64, scale 0.1, dropout 0.1) beside the
  MLP of every block, with the reference's addition order ``x + (mlp(norm2(x)) + adapter(x))``;
- ``ssf``, ``vpt_deep``, ``vpt_shallow``: ``cl_bench.models.petl``;
- ``full``: the whole ViT (APER-Finetune).

The frozen pretrained branch APER needs is the same ViT with every PETL switch off (bit-identical to
the pretrained weights), except for ``full``, which keeps a frozen copy taken before training.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from cl_bench.models.heads import CosineLinear
from cl_bench.models.petl import add_ssf, add_vpt, petl_disabled

from .ease.model import AdapterBlock, ParallelAdapter
from .first_session_config import PETL_KINDS

__all__ = ["PETL_KINDS", "INJECTORS", "PetlOptions", "ReferenceAdapterBlock", "add_adapters", "add_petl", "FirstSessionNet",
           "frozen_tensors"]


def frozen_tensors(*modules: nn.Module) -> nn.Module:
    """A holder of the tensors of ``modules`` as they are now, for ``CLBenchTemplate(backbone=...)``:
    checkpoints leave them out. Take it before PETL is injected (SSF and VPT add their parameters
    to the ViT's own modules), and leave out a ViT that trains in full: its tensors are learned."""
    holder = nn.Module()
    for i, p in enumerate(p for m in modules for p in m.parameters()):
        holder.register_parameter(f"p{i}", p)
    for i, b in enumerate(b for m in modules for b in m.buffers()):
        holder.register_buffer(f"b{i}", b)
    return holder


class PetlOptions:
    """The keys of the PETL modules (adapter width, scale, dropout; VPT tokens)."""

    def __init__(self, adapter_dim: int = 64, adapter_scale: float = 0.1, adapter_dropout: float = 0.1, vpt_tokens: int = 5) -> None:
        self.adapter_dim, self.adapter_scale, self.adapter_dropout, self.vpt_tokens = adapter_dim, adapter_scale, adapter_dropout, vpt_tokens

    @classmethod
    def from_method(cls, method) -> "PetlOptions":
        """From a config section with the ``PetlKeys``."""
        return cls(method.adapter_dim, method.adapter_scale, method.adapter_dropout, method.vpt_tokens)


class ReferenceAdapterBlock(AdapterBlock):
    """EASE's adapter block holding one adapter, adding ``x + (mlp + adapter)`` as RanPAC and APER
    do (EASE adds ``(x + mlp) + adapter``: equal up to float rounding), with a PETL switch."""

    def __init__(self, block: nn.Module, adapter: ParallelAdapter) -> None:
        super().__init__(block)
        self.adapters.append(adapter)
        self.petl_enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        x = x + b.drop_path1(b.ls1(b.attn(b.norm1(x))))
        mlp = b.drop_path2(b.ls2(b.mlp(b.norm2(x))))
        if not self.petl_enabled:
            return x + mlp
        return x + (mlp + self.adapters[0](x))


def add_adapters(vit: nn.Module, options: PetlOptions) -> list[nn.Parameter]:
    blocks = [ReferenceAdapterBlock(b, ParallelAdapter(vit.embed_dim, options.adapter_dim, options.adapter_scale,
                                                       options.adapter_dropout)) for b in vit.blocks]
    vit.blocks = nn.Sequential(*blocks)
    return [p for block in blocks for p in block.adapters.parameters()]


#: One injector per name of ``PETL_KINDS`` (the configs' choices; a test keeps the two equal).
INJECTORS: dict[str, Callable[[nn.Module, PetlOptions], list[nn.Parameter]]] = {
    "adapter": add_adapters,
    "ssf": lambda vit, options: add_ssf(vit),
    "vpt_deep": lambda vit, options: add_vpt(vit, options.vpt_tokens, deep=True),
    "vpt_shallow": lambda vit, options: add_vpt(vit, options.vpt_tokens, deep=False),
    "full": lambda vit, options: list(vit.parameters()),
}


def add_petl(vit: nn.Module, kind: str, options: PetlOptions) -> list[nn.Parameter]:
    """Inject PETL ``kind`` into ``vit`` in place; returns the parameters it trains."""
    if kind not in INJECTORS:
        raise ValueError(f"unknown PETL kind {kind!r}; allowed: {', '.join(PETL_KINDS)}")
    return INJECTORS[kind](vit, options)


class FirstSessionNet(nn.Module):
    """The ViT with one PETL module, a first-experience cosine head, and the pretrained branch."""

    def __init__(self, vit: nn.Module, petl: str, options: PetlOptions | None = None) -> None:
        super().__init__()
        vit.requires_grad_(False)
        self.petl = petl
        # APER-Finetune's frozen branch is the pretrained ViT as loaded, copied before any training.
        self.pretrained = copy.deepcopy(vit) if petl == "full" else None
        self.vit = vit
        # A plain list: the parameters are registered once, where they sit in the ViT.
        self.petl_parameters: list[nn.Parameter] = add_petl(vit, petl, options or PetlOptions())
        self.requires_grad_(False)  # nothing trains until the first experience starts
        self.head: CosineLinear | None = None

    def start_first_session(self, n_classes: int) -> None:
        """A fresh ``CosineLinear(D, n_classes)`` head (sigma 1); PETL and head trainable."""
        device = next(self.vit.parameters()).device
        self.head = CosineLinear(self.vit.embed_dim, n_classes).to(device)
        self.requires_grad_(False)
        for p in self.petl_parameters:
            p.requires_grad_(True)
        self.head.requires_grad_(True)

    def freeze(self) -> None:
        """After the first experience: nothing trains any more and the head is thrown away."""
        self.requires_grad_(False)
        self.head = None

    def adapted_features(self, x: torch.Tensor) -> torch.Tensor:
        """The CLS feature after the final LayerNorm, through the PETL module."""
        return self.vit(x)

    def pretrained_features(self, x: torch.Tensor) -> torch.Tensor:
        """The same feature of the un-adapted pretrained ViT."""
        if self.pretrained is not None:
            return self.pretrained(x)
        with petl_disabled(self.vit):
            return self.vit(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """First-experience logits ``sigma * cos(f_A(x), w_c)``."""
        if self.head is None:
            raise RuntimeError("no first-session head: call start_first_session first")
        return self.head(self.adapted_features(x))
