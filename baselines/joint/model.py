"""Joint trains the reference rows' network (``baselines.finetune.model``) once, on the union of
every experience's training data with every class known from the start: the same backbone, head
and trainable part as Finetune, so the two bound the methods from above and below."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..finetune.model import TRAINABLE_PARTS, ReferenceNet, linear_head

__all__ = ["TRAINABLE_PARTS", "ReferenceNet", "linear_head", "joint_loss"]


def joint_loss(logits: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over every class at once (no increments, no masking)."""
    return F.cross_entropy(logits, columns)
