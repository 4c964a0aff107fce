"""Finetune (the lower bound) as an Avalanche strategy, and the template it shares with Joint: the
pretrained ViT with one trainable part and a linear head over the classes seen so far (grown per
experience, old rows kept), SGD with momentum rebuilt each experience, a constant or cosine
learning rate. Finetune trains experience after experience with no continual-learning mechanism."""

from __future__ import annotations

import torch
from avalanche.training.plugins.evaluation import default_evaluator
from torch import nn

from cl_bench.baselines.finetune.config import LOSS_COLUMNS, TRAINABLE_PARTS, FinetuneConfig
from cl_bench.baselines.finetune.model import ReferenceNet, finetune_loss
from cl_bench.baselines.first_session import PetlOptions, frozen_tensors
from cl_bench.errors import StrategyArgumentError
from cl_bench.training.template import CLBenchTemplate, prepare_vit

__all__ = ["ReferenceRowTemplate", "Finetune"]

LR_SCHEDULES = ("constant", "cosine")


class ReferenceRowTemplate(CLBenchTemplate):
    """The reference rows' network and optimiser; subclasses give the loss and the weight decay."""

    task_head_in_training = False  # the head covers every class seen so far

    def __init__(self, *, model, trainable: str, adapter_dim: int, adapter_scale: float, adapter_dropout: float,
                 vpt_tokens: int, momentum: float, lr_schedule: str, copy_model: bool, **kwargs) -> None:
        for key, value, allowed in (("trainable", trainable, TRAINABLE_PARTS), ("lr_schedule", lr_schedule, LR_SCHEDULES)):
            if value not in allowed:
                raise StrategyArgumentError(f"argument '{key}' must be one of {', '.join(allowed)}; got {value!r}", key=key)
        vit = prepare_vit(model, copy_model=copy_model)
        # What checkpoints leave out: the pretrained tensors, unless the whole ViT trains (then all is learned).
        frozen = nn.Module() if trainable == "full" else frozen_tensors(vit)
        net = ReferenceNet(vit, 0, trainable, PetlOptions(adapter_dim, adapter_scale, adapter_dropout, vpt_tokens))
        self.momentum, self.lr_schedule = momentum, lr_schedule
        super().__init__(model=net, backbone=frozen, **kwargs)

    def adapt_model(self) -> None:
        self.model.expand_head(self.seen_classes)

    def optimizer_weight_decay(self) -> float:
        return self.weight_decay

    def build_optimizer(self, params):
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.optimizer_weight_decay())

    def build_scheduler(self, optimizer):
        if self.lr_schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(self.train_epochs, 1), eta_min=0.0)
        return None

    def head_parameters(self):
        return list(self.model.head.parameters()) if self.model.head is not None else []

    def forward(self) -> torch.Tensor:
        return self.model(self.mb_x)[:, : self.seen_classes]

    def extra_state(self) -> dict:
        head = self.model.head
        return {"head_columns": head.out_features if head is not None else 0}

    def restore_structure(self, extra: dict) -> None:
        if extra["head_columns"]:
            self.model.expand_head(extra["head_columns"])


class Finetune(ReferenceRowTemplate):
    """Finetune on a timm ViT (or a backbone tag), built like Avalanche's strategies:

        Finetune(model=vit, trainable="full", train_mb_size=128, train_epochs=20, device="cuda")

    Defaults are PILOT's ``exps/finetune.json`` (the whole ViT, SGD lr 1e-3, weight decay 5e-4 in the
    first experience and 2e-4 later); ``loss_columns="current"`` is PILOT's loss over the current
    experience's classes only.
    """

    config_cls = FinetuneConfig

    def __init__(self, *, model="vit_base_patch16_224.augreg_in21k", trainable: str = "full", adapter_dim: int = 64,
                 adapter_scale: float = 0.1, adapter_dropout: float = 0.1, vpt_tokens: int = 5, momentum: float = 0.9,
                 lr_schedule: str = "constant", later_weight_decay: float = 2e-4, loss_columns: str = "seen",
                 lr: float = 0.001, weight_decay: float = 5e-4, amp: str = "none", copy_model: bool = True,
                 train_mb_size: int = 128, train_epochs: int = 20, eval_mb_size: int = 128, device=None, plugins=None,
                 evaluator=default_evaluator, eval_every: int = -1, **base_kwargs) -> None:
        if loss_columns not in LOSS_COLUMNS:
            raise StrategyArgumentError(f"argument 'loss_columns' must be one of {', '.join(LOSS_COLUMNS)}; got {loss_columns!r}",
                                        key="loss_columns")
        self.later_weight_decay, self.loss_columns = later_weight_decay, loss_columns
        super().__init__(model=model, trainable=trainable, adapter_dim=adapter_dim, adapter_scale=adapter_scale,
                         adapter_dropout=adapter_dropout, vpt_tokens=vpt_tokens, momentum=momentum,
                         lr_schedule=lr_schedule, copy_model=copy_model, lr=lr, weight_decay=weight_decay, amp=amp,
                         train_mb_size=train_mb_size, train_epochs=train_epochs, eval_mb_size=eval_mb_size,
                         device=device, plugins=plugins, evaluator=evaluator, eval_every=eval_every, **base_kwargs)

    def optimizer_weight_decay(self) -> float:
        return self.weight_decay if self.task_index == 0 else self.later_weight_decay

    def criterion(self) -> torch.Tensor:
        if not self.is_training:
            return self._make_empty_loss()
        return finetune_loss(self.mb_output, self.mb_columns, self.known_classes, self.seen_classes, self.loss_columns)
