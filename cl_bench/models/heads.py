"""Classifier heads: the cosine training head, the class-prototype bank and per-task linear heads."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CosineLinear", "cosine_logits", "PrototypeBank", "TaskLinearHeads"]


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


class TaskLinearHeads(nn.Module):
    """A linear head that grows by one block of rows per task; logits of all tasks concatenated.

    Equal to one growing ``Linear`` whose old rows get no gradient (InfLoRA's per-task heads,
    SD-LoRA's growing head trained on the new classes' logits only), with the old blocks
    frozen as whole tensors. ``init``: ``"torch"`` is nn.Linear's default (weight and bias
    U(+-1/sqrt(d)), InfLoRA); ``"linear"`` is PILOT's ``SimpleLinear`` (kaiming-uniform with
    the linear gain, U(+-sqrt(3/d)), bias 0, SD-LoRA).
    """

    INITS = ("torch", "linear")

    def __init__(self, dim: int, init: str = "torch") -> None:
        super().__init__()
        if init not in self.INITS:
            raise ValueError(f"init must be one of {self.INITS}; got {init!r}")
        self.dim, self.init = dim, init
        self.heads = nn.ModuleList()

    def __len__(self) -> int:
        return len(self.heads)

    @property
    def sizes(self) -> list[int]:
        return [head.out_features for head in self.heads]

    def add(self, n_classes: int, device: torch.device | str | None = None) -> nn.Linear:
        head = nn.Linear(self.dim, n_classes, device=device)
        if self.init == "linear":
            nn.init.kaiming_uniform_(head.weight, nonlinearity="linear")
            nn.init.zeros_(head.bias)
        self.heads.append(head)
        return head

    def forward(self, z: torch.Tensor, tasks: slice | None = None) -> torch.Tensor:
        heads = self.heads if tasks is None else self.heads[tasks]
        return torch.cat([head(z) for head in heads], dim=-1)
