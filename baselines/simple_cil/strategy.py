"""SimpleCIL (Zhou et al., "Revisiting class-incremental learning with pre-trained models", 2023):
the backbone stays as pretrained; each class is the mean of its training features (test
transform), and a test image goes to the prototype with the highest cosine similarity."""

from __future__ import annotations

import torch
from torch import nn

from cl_bench.models.heads import PrototypeBank, cosine_logits
from cl_bench.training.template import CLBenchTemplate

__all__ = ["SimpleCIL", "PrototypeModel"]


class PrototypeModel(nn.Module):
    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit
        self.prototypes = PrototypeBank(vit.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cosine_logits(self.vit(x), self.prototypes.weight)


class SimpleCIL(CLBenchTemplate):
    def __init__(self, *, config, backbone, streams, device, plugins=()) -> None:
        super().__init__(model=PrototypeModel(backbone.vit), config=config, streams=streams,
                         backbone=backbone, device=device, plugins=plugins)
        self.train_epochs = 0  # nothing is trained

    def build_optimizer(self, params):
        raise AssertionError("SimpleCIL has no trainable parameters")

    def forward(self) -> torch.Tensor:
        return self.model(self.mb_x)

    def _after_training_exp(self, **kwargs) -> None:
        self.model.prototypes.add(self.class_means(self.model.vit))
        super()._after_training_exp(**kwargs)
