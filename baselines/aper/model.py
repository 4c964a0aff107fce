"""APER's merged network (spec more_baselines_prompt_analytic.md §4.1): after the first-session
adaptation (``baselines.first_session``), features ``z(x) = [phi_0(x) ; phi_A(x)]`` of the frozen
pretrained ViT and the adapted one, in that order, and a cosine classifier over class prototypes
(un-normalised means of z over each class's training images, eval transform). The cosine
normalises the whole concatenation, so each branch counts with its norm.
"""

from __future__ import annotations

import torch
from torch import nn

from cl_bench.models.heads import PrototypeBank, cosine_logits

from ..first_session import FirstSessionNet, PetlOptions

__all__ = ["concatenated_features", "class_prototypes", "AperNet"]


def concatenated_features(pretrained: torch.Tensor, adapted: torch.Tensor) -> torch.Tensor:
    """``[phi_0 ; phi_A]`` along the feature axis (B, 2D)."""
    return torch.cat([pretrained, adapted], dim=1)


def class_prototypes(features: torch.Tensor, columns: torch.Tensor, classes: torch.Tensor | list[int]) -> torch.Tensor:
    """The mean feature of each class in ``classes`` (rows in that order), in float32."""
    return torch.stack([features[columns == c].float().mean(dim=0) for c in classes])


class AperNet(nn.Module):
    """The first-session network, its two branches concatenated, and the prototype bank."""

    def __init__(self, vit: nn.Module, petl: str = "adapter", options: PetlOptions | None = None) -> None:
        super().__init__()
        self.first_session = FirstSessionNet(vit, petl, options)
        self.prototypes = PrototypeBank(2 * vit.embed_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``z(x)``: two ViT passes (frozen, then adapted)."""
        net = self.first_session
        return concatenated_features(net.pretrained_features(x), net.adapted_features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``cos(z(x), p_c)`` over every class with a prototype."""
        return cosine_logits(self.features(x), self.prototypes.weight)
