"""CODA-Prompt as an Avalanche strategy: two passes per image, past classes masked and future ones
cut off at training, Adam rebuilt per experience with CODA's own cosine schedule (per epoch)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from avalanche.training.plugins.evaluation import default_evaluator

from cl_bench.baselines.coda_prompt.config import CodaPromptConfig, check_coda_arguments
from cl_bench.baselines.coda_prompt.model import CodaPromptNet
from cl_bench.baselines.prompt_template import PromptTemplate
from cl_bench.errors import StrategyArgumentError
from cl_bench.training.template import prepare_vit

__all__ = ["CodaPrompt", "coda_cosine_factor"]


def coda_cosine_factor(epoch: int, epochs: int) -> float:
    """Official ``CosineSchedule``: ``cos(99 pi e / (200 (K - 1)))``; never reaches 0 (0.016 at the end)."""
    if epochs == 1:
        return 1.0
    return math.cos(99 * math.pi * epoch / (200 * (epochs - 1)))


class CodaPrompt(PromptTemplate):
    """CODA-Prompt on a timm ViT (or a backbone tag), built like Avalanche's strategies:

        CodaPrompt(model=vit, num_classes=100, n_experiences=20, train_mb_size=128, train_epochs=20)

    The component pool is split evenly across ``n_experiences`` (the reference fixes it up front);
    ``num_classes`` is the number of classes of the whole stream. Defaults are the official recipe.
    """

    config_cls = CodaPromptConfig
    drop_last_train_batch = True  # official train loader

    def __init__(self, *, model="vit_base_patch16_224.augreg_in21k", num_classes: int, n_experiences: int,
                 pool_size: int = 100, prompt_length: int = 8, prompt_layers: tuple[int, ...] = (0, 1, 2, 3, 4),
                 ortho_weight: float = 0.0, query_cache: bool = True, lr: float = 0.001, weight_decay: float = 0.0,
                 amp: str = "none", copy_model: bool = True, train_mb_size: int = 128, train_epochs: int = 20,
                 eval_mb_size: int = 128, device=None, plugins=None, evaluator=default_evaluator,
                 eval_every: int = -1, **base_kwargs) -> None:
        vit = prepare_vit(model, copy_model=copy_model)
        check_coda_arguments(pool_size=pool_size, prompt_length=prompt_length, prompt_layers=prompt_layers,
                             depth=len(vit.blocks), width=vit.embed_dim, n_experiences=n_experiences)
        self.n_experiences = n_experiences
        net = CodaPromptNet(vit, num_classes, n_experiences, pool_size, prompt_length, prompt_layers, ortho_weight)
        self.prompt_penalty = torch.zeros(())
        super().__init__(model=net, backbone=vit, num_classes=num_classes, query_cache=query_cache, lr=lr,
                         weight_decay=weight_decay, amp=amp, train_mb_size=train_mb_size, train_epochs=train_epochs,
                         eval_mb_size=eval_mb_size, device=device, plugins=plugins, evaluator=evaluator,
                         eval_every=eval_every, **base_kwargs)

    @classmethod
    def stream_arguments(cls, *, n_classes: int, n_experiences: int) -> dict:
        return {"num_classes": n_classes, "n_experiences": n_experiences}

    def adapt_model(self) -> None:
        if self.task_index >= self.n_experiences:
            raise StrategyArgumentError(
                f"argument 'n_experiences' is {self.n_experiences}, but experience {self.experience_index} is training "
                f"task {self.task_index + 1}; the component pool is split across n_experiences tasks", key="n_experiences")
        pool = self.model.pool
        while pool.task_count < self.task_index:  # process_task_count(), once per new task
            pool.next_task()
        pool.to(self.device)

    def build_scheduler(self, optimizer):
        epochs = max(self.train_epochs, 1)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: coda_cosine_factor(e, epochs))

    def forward(self) -> torch.Tensor:
        logits, self.prompt_penalty = self.model(self.mb_x, self.query(), train=self.is_training)
        logits = self.eval_logits(logits)  # future classes are cut off in training too
        if self.is_training:
            logits = torch.cat([torch.full_like(logits[:, : self.known_classes], float("-inf")),
                                logits[:, self.known_classes:]], dim=1)
        return logits

    def criterion(self) -> torch.Tensor:
        if not self.is_training:
            return self._make_empty_loss()
        return F.cross_entropy(self.mb_output, self.mb_columns) + self.prompt_penalty

    def extra_state(self) -> dict:
        return {"task_count": self.model.pool.task_count}

    def restore_structure(self, extra: dict) -> None:
        # Parameter values come from the checkpoint; only the slice bookkeeping is restored here.
        self.model.pool.task_count = extra["task_count"]
