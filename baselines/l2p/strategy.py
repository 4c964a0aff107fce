"""L2P as an Avalanche strategy: two passes per image (frozen query, prompted), every class but the
current experience's masked at training, Adam rebuilt per experience, constant learning rate."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from avalanche.training.plugins.evaluation import default_evaluator

from cl_bench.baselines.l2p.config import L2PConfig, check_top_k
from cl_bench.baselines.l2p.model import L2PNet
from cl_bench.baselines.prompt_template import PromptTemplate
from cl_bench.training.template import prepare_vit

__all__ = ["L2P"]


class L2P(PromptTemplate):
    """L2P on a timm ViT (or a backbone tag), built like Avalanche's ``LearningToPrompt``:

        L2P(model=vit, num_classes=100, train_mb_size=16, train_epochs=5, device="cuda")

    ``num_classes`` is the number of classes of the whole stream (the reference's head covers them
    all from the start). Defaults are PILOT's CIFAR-100 recipe.
    """

    config_cls = L2PConfig

    def __init__(self, *, model="vit_base_patch16_224.augreg_in21k", num_classes: int, pool_size: int = 10,
                 prompt_length: int = 5, top_k: int = 5, pull_constraint: float = 0.1,
                 batchwise_prompt: bool = True, batchwise_prompt_eval: bool = True, clip_grad_norm: float = 0.0,
                 query_cache: bool = True, lr: float = 0.001875, weight_decay: float = 0.0, amp: str = "none",
                 copy_model: bool = True, train_mb_size: int = 16, train_epochs: int = 5, eval_mb_size: int = 16,
                 device=None, plugins=None, evaluator=default_evaluator, eval_every: int = -1, **base_kwargs) -> None:
        check_top_k(top_k, pool_size)
        vit = prepare_vit(model, copy_model=copy_model)
        net = L2PNet(vit, num_classes, pool_size, prompt_length, top_k, batchwise_prompt, batchwise_prompt_eval)
        self.pull_constraint = pull_constraint
        self.clip_grad_norm = clip_grad_norm
        self.key_similarity = torch.zeros(())
        self.prompt_usage = torch.zeros(pool_size, dtype=torch.long)
        super().__init__(model=net, backbone=vit, num_classes=num_classes, query_cache=query_cache, lr=lr,
                         weight_decay=weight_decay, amp=amp, train_mb_size=train_mb_size, train_epochs=train_epochs,
                         eval_mb_size=eval_mb_size, device=device, plugins=plugins, evaluator=evaluator,
                         eval_every=eval_every, **base_kwargs)

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
        return F.cross_entropy(self.mb_output, self.mb_columns) - self.pull_constraint * self.key_similarity

    def _after_backward(self, **kwargs) -> None:
        if self.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
        super()._after_backward(**kwargs)

    def experience_report(self) -> dict:
        """How often each prompt was chosen while training this experience (selection collapse shows here)."""
        return {"prompt_usage": self.prompt_usage.tolist()}
