"""Classifier heads: the cosine training head and the class-prototype bank."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CosineLinear", "cosine_logits", "PrototypeBank"]


def cosine_logits(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """``cos(f, p)`` for every feature/prototype pair (both L2-normalised, eps 1e-12)."""
    return F.linear(F.normalize(features, dim=-1), F.normalize(prototypes, dim=-1))


class CosineLinear(nn.Module):
    """``sigma * cos(z, w_c)`` with a learnable scalar ``sigma`` (PILOT ``CosineLinear``/``CosineLinearFeature``).

    Weights start U(-1/sqrt(d), 1/sqrt(d)) and ``sigma`` at 1, as in the reference.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.sigma = nn.Parameter(torch.empty(1))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.ones_(self.sigma)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.sigma * cosine_logits(z, self.weight)


class PrototypeBank(nn.Module):
    """Class-mean prototypes of all seen classes, rows in class-order position.

    The buffer grows by one block per experience; loading a checkpoint resizes it first.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(0, dim))

    def __len__(self) -> int:
        return self.weight.shape[0]

    def add(self, prototypes: torch.Tensor) -> None:
        self.weight = torch.cat([self.weight, prototypes.to(self.weight)])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        incoming = state_dict.get(prefix + "weight")
        if incoming is not None:
            self.weight = torch.empty_like(incoming, device=self.weight.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
