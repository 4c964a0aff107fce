"""L2P as an Avalanche strategy: two passes per image (frozen query, prompted), every class but the
current experience's masked at training, Adam rebuilt per experience, constant learning rate."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from baselines.l2p.model import L2PNet
from baselines.prompt_template import PromptTemplate

__all__ = ["L2P"]


class L2P(PromptTemplate):
    def __init__(self, *, config, backbone, streams, device, plugins=()) -> None:
        m = config.method
        model = L2PNet(backbone.vit, streams.n_classes, m.pool_size, m.prompt_length, m.top_k,
                       m.batchwise_prompt, m.batchwise_prompt_eval)
        self.key_similarity = torch.zeros(())
        self.prompt_usage = torch.zeros(m.pool_size, dtype=torch.long)
        super().__init__(model=model, config=config, query_cache=m.query_cache, streams=streams,
                         backbone=backbone, device=device, plugins=plugins)

    def adapt_model(self) -> None:
        self.prompt_usage.zero_()

    def forward(self) -> torch.Tensor:
        logits, self.key_similarity, idx = self.model(self.mb_x, self.query())
        if not self.is_training:
            return self.eval_logits(logits)
        self.prompt_usage += torch.bincount(idx.flatten().cpu(), minlength=self.prompt_usage.numel())
        masked = torch.full_like(logits, float("-inf"))
        current = slice(self.known_classes, self.seen_classes)
        masked[:, current] = logits[:, current]
        return masked

    def criterion(self) -> torch.Tensor:
        if not self.is_training:
            return self._make_empty_loss()
        return F.cross_entropy(self.mb_output, self.mb_y) - self.config.method.pull_constraint * self.key_similarity

    def _after_backward(self, **kwargs) -> None:
        if self.config.method.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.method.clip_grad_norm)
        super()._after_backward(**kwargs)

    def experience_report(self) -> dict:
        """How often each prompt was chosen while training this experience (selection collapse shows here)."""
        return {"prompt_usage": self.prompt_usage.tolist()}
