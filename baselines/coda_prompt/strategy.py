"""CODA-Prompt as an Avalanche strategy: two passes per image, past classes masked and future ones
cut off at training, Adam rebuilt per experience with CODA's own cosine schedule (per epoch)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from baselines.coda_prompt.model import CodaPromptNet
from baselines.prompt_template import PromptTemplate

__all__ = ["CodaPrompt", "coda_cosine_factor"]


def coda_cosine_factor(epoch: int, epochs: int) -> float:
    """Official ``CosineSchedule``: ``cos(99 pi e / (200 (K - 1)))``; never reaches 0 (0.016 at the end)."""
    if epochs == 1:
        return 1.0
    return math.cos(99 * math.pi * epoch / (200 * (epochs - 1)))


class CodaPrompt(PromptTemplate):
    drop_last_train_batch = True  # official train loader

    def __init__(self, *, config, backbone, streams, device, plugins=()) -> None:
        m = config.method
        model = CodaPromptNet(backbone.vit, streams.n_classes, streams.n_experiences, m.pool_size,
                              m.prompt_length, m.prompt_layers, m.ortho_weight)
        self.prompt_penalty = torch.zeros(())
        super().__init__(model=model, config=config, query_cache=m.query_cache, streams=streams,
                         backbone=backbone, device=device, plugins=plugins)

    def adapt_model(self) -> None:
        pool = self.model.pool
        while pool.task_count < self.experience_index:  # process_task_count(), once per new task
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
        return F.cross_entropy(self.mb_output, self.mb_y) + self.prompt_penalty

    def extra_state(self) -> dict:
        return {"task_count": self.model.pool.task_count}

    def restore_structure(self, extra: dict) -> None:
        # Parameter values come from the checkpoint; only the slice bookkeeping is restored here.
        self.model.pool.task_count = extra["task_count"]
