"""CL-LoRA's two switchable components as Avalanche plugins.

``SharedAdapterDistillation`` keeps the task-shared adapters close to their previous-task
snapshot with its own optimizer step; ``AdapterGrowth`` gives every task fresh task-specific
adapters and block weights, keeps the old ones frozen, and adds the orthogonality loss.
"""

from __future__ import annotations

import torch
from avalanche.core import SupervisedPlugin

from cl_bench.models.vit_parts import cls_feature
from cl_bench.training.plugins import check_finite, check_finite_losses
from cl_bench.strategies.cl_lora.losses import (
    block_weight_orthogonality,
    distillation_loss,
    reassign_gradient,
    reassignment_weights,
)
from cl_bench.strategies.cl_lora.model import STUDENT, TEACHER

__all__ = ["SharedAdapterDistillation", "AdapterGrowth"]


class SharedAdapterDistillation(SupervisedPlugin):
    """KD on the shared half (spec §3): from the second experience on, before the CE step.

    Student: the current shared adapters; teacher: their snapshot from the end of the previous
    experience; both go through the final LayerNorm and the *current* cosine head. The KD
    gradient of each shared up-projection is rescaled per output channel by the row norms of the
    teacher's up-projection, then the optimizer takes a step on the KD gradient alone.

    ``reuse_shared_forward``: the student's shared half is the main forward's first half (same
    weights, same input), so its tokens are reused and both gradients come from one graph; the
    teacher pass needs no graph and starts from the main forward's patch embedding (frozen, no
    dropout draws). The KD loss is then computed right after the forward and checked with the CE
    loss in one device sync, so the backward passes and both steps are queued without a stall.
    Every value is the one of the reference order (tested bit for bit). ``False`` runs the student
    separately after the CE gradients, as the reference does.
    """

    def __init__(self, *, weight: float, temperature: float, reassign: bool, reuse_shared_forward: bool) -> None:
        super().__init__()
        self.weight = weight
        self.temperature = temperature
        self.reassign = reassign
        self.reuse_shared_forward = reuse_shared_forward
        self.row_weights: dict[int, torch.Tensor] = {}
        self.steps_taken = 0
        self._early_loss: torch.Tensor | None = None

    @staticmethod
    def active(strategy) -> bool:
        return strategy.task_index > 0 and strategy.model.has_teacher

    def before_training_exp(self, strategy, **kwargs) -> None:
        """The reassignment statistic depends only on the frozen teacher: compute it once."""
        self.row_weights = {}
        if not (self.reassign and self.active(strategy)):
            return
        for student, teacher in zip(strategy.model.shared_pairs(STUDENT), strategy.model.shared_pairs(TEACHER)):
            for name in ("q", "v"):
                up = getattr(student, name).up.weight
                self.row_weights[id(up)] = reassignment_weights(getattr(teacher, name).up.weight.detach())

    def loss(self, strategy) -> torch.Tensor:
        model = strategy.model
        x = strategy.mb_x
        with strategy.autocast():  # the precision of the main forward
            embedded = None
            if self.reuse_shared_forward:
                student_feature = cls_feature(model.vit, strategy.shared_tokens)
                embedded = strategy.embedded_tokens if model.embedding_is_deterministic else None
            else:
                student_feature = model.shared_feature(x, STUDENT)
            with torch.no_grad():
                teacher_feature = model.shared_feature(x, TEACHER, embedded)
            student, teacher = model.proxy_head(student_feature), model.proxy_head(teacher_feature)
        return distillation_loss(student.float(), teacher.float(), weight=self.weight, temperature=self.temperature)

    def before_backward(self, strategy, **kwargs) -> None:
        """With ``reuse_shared_forward``: the KD loss now, checked with the CE loss in one sync."""
        self._early_loss = None
        if self.reuse_shared_forward and self.active(strategy):
            self._early_loss = self.loss(strategy)
            check_finite_losses(strategy, [("loss", strategy.loss), ("KD loss", self._early_loss)])

    def before_update(self, strategy, **kwargs) -> None:
        """Step 1 of the iteration (spec §6.1): KD gradient, reassignment, optimizer step."""
        if not self.active(strategy):
            return
        loss, self._early_loss = self._early_loss, None
        if loss is None:
            loss = self.loss(strategy)
            check_finite(loss, strategy, "KD loss")
        strategy.loss_terms["kd"] = loss.detach()
        model = strategy.model
        params = [p for pair in model.shared_pairs(STUDENT) for p in (pair.q.up.weight, pair.v.up.weight)]
        params += list(model.proxy_head.parameters())
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        strategy.optimizer.zero_grad(set_to_none=True)
        for param, grad in zip(params, grads):
            if grad is not None and id(param) in self.row_weights:
                grad = reassign_gradient(grad, self.row_weights[id(param)])
            param.grad = grad
        strategy.optimizer.step()
        self.steps_taken += 1

    def after_training_exp(self, strategy, **kwargs) -> None:
        strategy.model.snapshot_teacher()


class AdapterGrowth(SupervisedPlugin):
    """A new branch (task-specific adapters + block weights) per experience after the first, and
    the orthogonality loss of its block weights against the frozen earlier ones."""

    def __init__(self, *, orth_weight: float) -> None:
        super().__init__()
        self.orth_weight = orth_weight

    def adapt_model(self, strategy, **kwargs) -> None:
        if strategy.task_index > 0:
            strategy.model.add_branch()

    def before_backward(self, strategy, **kwargs) -> None:
        if strategy.task_index == 0 or self.orth_weight == 0:
            return
        weights = strategy.model.block_weights
        orthogonality = block_weight_orthogonality(list(weights[:-1]), weights[-1])
        strategy.loss_terms["orthogonality"] = orthogonality.detach()
        strategy.loss = strategy.loss + self.orth_weight * orthogonality

    def after_training_exp(self, strategy, **kwargs) -> None:
        strategy.model.block_weights[-1].requires_grad_(False)
        for wrapper in strategy.model.specific_wrappers:
            wrapper.pairs[-1].requires_grad_(False)
