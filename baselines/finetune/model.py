"""The reference rows' network, shared by Finetune (the lower bound) and Joint (the upper bound):
the pretrained ViT with one choice of trainable part and a linear head on the CLS feature.

Trainable parts (``TRAINABLE_PARTS``): ``full`` (the whole ViT, PILOT's ``finetune``), ``head`` (a
linear probe), or one PETL module of ``baselines.first_session`` (``adapter``, ``ssf``, ``vpt_deep``,
``vpt_shallow``), so a bound can match the trainable parts of the methods it bounds. The head is
PILOT's ``SimpleLinear`` (Kaiming-uniform weight, zero bias); it grows with new classes keeping the
old rows (PILOT ``update_fc``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..first_session import PetlOptions, add_petl
from .config import LOSS_COLUMNS, TRAINABLE_PARTS

__all__ = ["TRAINABLE_PARTS", "LOSS_COLUMNS", "linear_head", "finetune_loss", "ReferenceNet"]


def linear_head(in_features: int, n_classes: int) -> nn.Linear:
    head = nn.Linear(in_features, n_classes)
    nn.init.kaiming_uniform_(head.weight, nonlinearity="linear")
    nn.init.zeros_(head.bias)
    return head


def finetune_loss(logits: torch.Tensor, columns: torch.Tensor, known: int, seen: int, loss_columns: str) -> torch.Tensor:
    """Cross-entropy of Finetune: over columns ``[known, seen)`` (``current``) or ``[0, seen)`` (``seen``)."""
    if loss_columns == "current":
        return F.cross_entropy(logits[:, known:seen], columns - known)
    if loss_columns == "seen":
        return F.cross_entropy(logits[:, :seen], columns)
    raise ValueError(f"unknown loss_columns {loss_columns!r}; allowed: {', '.join(LOSS_COLUMNS)}")


class ReferenceNet(nn.Module):
    def __init__(self, vit: nn.Module, n_classes: int, trainable: str = "full", options: PetlOptions | None = None) -> None:
        super().__init__()
        if trainable not in TRAINABLE_PARTS:
            raise ValueError(f"unknown trainable part {trainable!r}; allowed: {', '.join(TRAINABLE_PARTS)}")
        vit.requires_grad_(False)
        self.vit = vit
        self.trainable = trainable
        params = [] if trainable == "head" else add_petl(vit, trainable, options or PetlOptions())
        for p in params:
            p.requires_grad_(True)
        #: ``n_classes=0``: no head until ``expand_head`` (the strategies grow it with the experiences).
        self.head: nn.Linear | None = linear_head(vit.embed_dim, n_classes) if n_classes > 0 else None

    def expand_head(self, n_classes: int) -> None:
        """A head over ``n_classes`` columns with the old rows kept (new parameters: rebuild the optimiser)."""
        old = self.head
        if old is None:
            self.head = linear_head(self.vit.embed_dim, n_classes).to(next(self.vit.parameters()).device)
            return
        if n_classes <= old.out_features:
            return
        new = linear_head(old.in_features, n_classes).to(old.weight.device)
        with torch.no_grad():
            new.weight[: old.out_features] = old.weight
            new.bias[: old.out_features] = old.bias
        self.head = new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.vit(x))
