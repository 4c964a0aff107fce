"""CL-LoRA's losses and gradient reassignment, as plain functions (spec §3, §4)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "soft_target_cross_entropy",
    "distillation_loss",
    "reassignment_weights",
    "reassign_gradient",
    "block_weight_orthogonality",
    "ORTH_EPS",
]

#: Added to the norms in the orthogonality loss (reference ``compute_orthogonality_loss``).
ORTH_EPS = 1e-8


def soft_target_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``-(1/B) sum_b sum_c softmax(t/T) log_softmax(s/T)``: soft-target CE, not KL, and no T^2 factor.

    The teacher logits are not detached: its gradient reaches the shared head (spec §3).
    """
    log_p = F.log_softmax(student_logits / temperature, dim=1)
    q = F.softmax(teacher_logits / temperature, dim=1)
    return -(q * log_p).sum() / student_logits.shape[0]


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, weight: float, temperature: float) -> torch.Tensor:
    return weight * soft_target_cross_entropy(student_logits, teacher_logits, temperature)


def reassignment_weights(old_up: torch.Tensor) -> torch.Tensor:
    """Per output channel: ``d * n / sum(n)`` (mean 1), ``n`` the row norms of the previous task's
    up-projection (d x r). An all-zero up-projection (never trained) gives weights 1, where the
    reference would divide by zero."""
    norms = old_up.norm(dim=1)
    total = norms.sum()
    if total == 0:
        return torch.ones_like(norms)
    return norms.numel() * norms / total


def reassign_gradient(grad: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Scale the rows of an up-projection's (d x r) KD gradient by the reassignment weights."""
    return grad * weights.unsqueeze(1)


def block_weight_orthogonality(previous: Sequence[torch.Tensor], current: torch.Tensor) -> torch.Tensor:
    """``(1/t) sum_i |<vec(W_i)/(|W_i|+eps), vec(W_t)/(|W_t|+eps)>|`` over earlier tasks' block weights."""
    if not previous:
        return current.new_zeros(())
    now = current.flatten() / (current.flatten().norm() + ORTH_EPS)
    terms = [torch.abs(torch.dot(w.flatten() / (w.flatten().norm() + ORTH_EPS), now)) for w in previous]
    return torch.stack(terms).mean()
