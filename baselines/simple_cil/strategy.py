"""SimpleCIL (Zhou et al., "Revisiting class-incremental learning with pre-trained models", 2023):
the backbone stays as pretrained; each class is the mean of its training features (test
transform), and a test image goes to the prototype with the highest cosine similarity."""

from __future__ import annotations

import torch
from torch import nn

from avalanche.training.plugins.evaluation import default_evaluator

from cl_bench.baselines.simple_cil.config import SimpleCILConfig
from cl_bench.models.heads import PrototypeBank, cosine_logits
from cl_bench.training.template import CLBenchTemplate, prepare_vit

__all__ = ["SimpleCIL", "PrototypeModel"]


class PrototypeModel(nn.Module):
    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit
        self.prototypes = PrototypeBank(vit.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cosine_logits(self.vit(x), self.prototypes.weight)


class SimpleCIL(CLBenchTemplate):
    """SimpleCIL on a timm ViT (or a backbone tag): ``SimpleCIL(model=vit, eval_mb_size=128)``.
    Nothing is trained: each experience adds the class means of its training images."""

    config_cls = SimpleCILConfig

    def __init__(self, *, model="vit_base_patch16_224.augreg_in21k", copy_model: bool = True, amp: str = "none",
                 train_mb_size: int = 128, eval_mb_size: int = 128, device=None, plugins=None,
                 evaluator=default_evaluator, eval_every: int = -1, **base_kwargs) -> None:
        base_kwargs.pop("train_epochs", None)  # nothing is trained: any number of epochs is zero
        base_kwargs.pop("lr", None)
        base_kwargs.pop("weight_decay", None)
        vit = prepare_vit(model, copy_model=copy_model)
        super().__init__(model=PrototypeModel(vit), backbone=vit, lr=0.0, amp=amp, train_mb_size=train_mb_size,
                         train_epochs=0, eval_mb_size=eval_mb_size, device=device, plugins=plugins,
                         evaluator=evaluator, eval_every=eval_every, **base_kwargs)

    def build_optimizer(self, params):
        raise AssertionError("SimpleCIL has no trainable parameters")

    def forward(self) -> torch.Tensor:
        return self.model(self.mb_x)

    def _after_training_exp(self, **kwargs) -> None:
        self.model.prototypes.add(self.class_means(self.model.vit))
        super()._after_training_exp(**kwargs)
