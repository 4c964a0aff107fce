"""EASE as an Avalanche strategy: per experience a new adapter set and a throw-away cosine head
trained on the experience's classes (SGD, cosine schedule), then prototypes of the new classes in
every subspace (training images, test transform) and the prototype complement for old classes."""

from __future__ import annotations

import torch

from avalanche.training.plugins.evaluation import default_evaluator

from cl_bench.baselines.ease.config import EaseConfig
from cl_bench.baselines.ease.model import EaseNet, complement_prototypes, ensemble_logits
from cl_bench.models.heads import CosineLinear
from cl_bench.training.template import CLBenchTemplate, prepare_vit

__all__ = ["EASE"]


class EASE(CLBenchTemplate):
    """EASE on a timm ViT (or a backbone tag), built like Avalanche's strategies:

        EASE(model=vit, train_mb_size=48, train_epochs=20, device="cuda")

    Defaults are the official CIFAR-100 IN-21k recipe (``exps/ease_cifar_in21k.json``).
    """

    config_cls = EaseConfig

    def __init__(self, *, model="vit_base_patch16_224.augreg_in21k", adapter_dim: int = 64, adapter_scale: float = 0.1,
                 adapter_dropout: float = 0.1, alpha: float = 0.1, momentum: float = 0.9, batched_subspaces: bool = True,
                 max_batch_sequences: int = 0, lr: float = 0.025, weight_decay: float = 5e-4, amp: str = "none",
                 copy_model: bool = True, train_mb_size: int = 48, train_epochs: int = 20, eval_mb_size: int = 128,
                 device=None, plugins=None, evaluator=default_evaluator, eval_every: int = -1, **base_kwargs) -> None:
        vit = prepare_vit(model, copy_model=copy_model)
        net = EaseNet(vit, adapter_dim, adapter_scale, adapter_dropout, max_batch_sequences, device=device or "cpu")
        self.alpha, self.momentum, self.batched_subspaces = alpha, momentum, batched_subspaces
        super().__init__(model=net, backbone=vit, lr=lr, weight_decay=weight_decay, amp=amp,
                         train_mb_size=train_mb_size, train_epochs=train_epochs, eval_mb_size=eval_mb_size,
                         device=device, plugins=plugins, evaluator=evaluator, eval_every=eval_every, **base_kwargs)

    def adapt_model(self) -> None:
        model = self.model
        current = model.add_adapter_set()
        model.proxy_head = CosineLinear(model.vit.embed_dim, self.seen_classes - self.known_classes).to(self.device)
        model.set_trainable(current)

    def build_optimizer(self, params):
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def build_scheduler(self, optimizer):
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(self.train_epochs, 1), eta_min=0.0)

    def forward(self) -> torch.Tensor:
        model = self.model
        if self.is_training:
            return model.proxy_head(model.features(self.mb_x, [model.n_sets - 1])[0])
        sets = list(range(model.n_sets))
        features = model.features(self.mb_x, sets, batched=self.batched_subspaces)
        return ensemble_logits(features, model.prototypes, model.class_ranges, self.alpha)

    def _after_training_exp(self, **kwargs) -> None:
        model = self.model
        model.requires_grad_(False)
        sets = list(range(model.n_sets))
        means = self.class_means(lambda x: model.features(x, sets).transpose(0, 1))  # (classes, subspaces, D)
        model.grow_prototypes(self.seen_classes)
        model.prototypes[self.known_classes: self.seen_classes] = means
        model.class_ranges.append((self.known_classes, self.seen_classes))
        model.prototypes = complement_prototypes(model.prototypes, model.class_ranges)
        super()._after_training_exp(**kwargs)
        model.proxy_head = None  # thrown away: inference uses the prototypes only

    def head_parameters(self):
        return list(self.model.proxy_head.parameters()) if self.model.proxy_head is not None else []

    def experience_report(self) -> dict:
        """The adapter-set batching in use at inference (measured or cached on first use), for the record."""
        return {"branch_batching": self.model.batching.report()}

    def extra_state(self) -> dict:
        return {"n_sets": self.model.n_sets, "class_ranges": [list(r) for r in self.model.class_ranges]}

    def restore_structure(self, extra: dict) -> None:
        while self.model.n_sets < extra["n_sets"]:
            self.model.add_adapter_set()
        self.model.class_ranges[:] = [tuple(r) for r in extra["class_ranges"]]
        self.model.requires_grad_(False)
