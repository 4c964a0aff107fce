"""What L2P and CODA-Prompt share: the prompted ViT, a linear head over all classes, the frozen
query (cached at evaluation), Adam rebuilt every experience, and scoring over seen classes."""

from __future__ import annotations

import torch
from torch import nn

from cl_bench.models.prompting import PromptedViT, QueryCache
from cl_bench.training.template import CLBenchTemplate

__all__ = ["PromptTemplate"]


class PromptTemplate(CLBenchTemplate):
    """Subclasses build ``model`` with ``model.prompted`` (a ``PromptedViT``) and ``model.head``."""

    def __init__(self, *, model: nn.Module, config, query_cache: bool, **kwargs) -> None:
        self.query_cache = QueryCache() if query_cache else None
        self.mb_keys: list[bytes] | None = None
        super().__init__(model=model, config=config, **kwargs)

    def head_parameters(self):
        return list(self.model.head.parameters())

    def build_optimizer(self, params):
        return torch.optim.Adam(params, lr=self.config.run.lr, betas=(0.9, 0.999), weight_decay=self.config.run.weight_decay)

    def _unpack_minibatch(self) -> None:
        # Cache keys are hashed from the CPU batch, before it moves to the device.
        use_cache = self.query_cache is not None and not self.is_training
        self.mb_keys = QueryCache.keys(self.mbatch[0]) if use_cache else None
        super()._unpack_minibatch()

    def query(self) -> torch.Tensor:
        prompted: PromptedViT = self.model.prompted
        if self.mb_keys is None:
            return prompted.query(self.mb_x)
        return self.query_cache.get(self.mb_keys, self.mb_x, prompted.query)

    def eval_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Every seen class competes, unseen ones do not (PILOT slices to the seen classes)."""
        return logits[:, : self.seen_classes]
