"""What L2P and CODA-Prompt share: the prompted ViT, a linear head over all classes of the stream,
the frozen query (cached at evaluation), Adam rebuilt every experience, and scoring over the
classes trained so far."""

from __future__ import annotations

import torch
from torch import nn

from cl_bench.errors import StrategyArgumentError
from cl_bench.models.prompting import PromptedViT, QueryCache
from cl_bench.training.template import CLBenchTemplate

__all__ = ["PromptTemplate"]


class PromptTemplate(CLBenchTemplate):
    """Subclasses build ``model`` with ``model.prompted`` (a ``PromptedViT``) and ``model.head``."""

    task_head_in_training = False  # one head over every class; training masks the other columns

    def __init__(self, *, model: nn.Module, num_classes: int, query_cache: bool, **kwargs) -> None:
        self.num_classes = num_classes
        self.query_cache = QueryCache() if query_cache else None
        self.mb_keys: list[bytes] | None = None
        super().__init__(model=model, **kwargs)

    @classmethod
    def stream_arguments(cls, *, n_classes: int, n_experiences: int) -> dict:
        return {"num_classes": n_classes}

    def _before_training_exp(self, **kwargs) -> None:
        super()._before_training_exp(**kwargs)  # registers the experience's classes first
        if self.seen_classes > self.num_classes:
            raise StrategyArgumentError(
                f"argument 'num_classes' is {self.num_classes}, but {self.seen_classes} classes have been trained by "
                f"experience {self.experience_index}; give the number of classes of the whole stream", key="num_classes")

    def head_parameters(self):
        return list(self.model.head.parameters())

    def build_optimizer(self, params):
        return torch.optim.Adam(params, lr=self.lr, betas=(0.9, 0.999), weight_decay=self.weight_decay)

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
        """Every class trained so far competes, the others do not (PILOT slices to the seen classes)."""
        return logits[:, : self.seen_classes]
