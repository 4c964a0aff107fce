"""EASE as an Avalanche strategy: per experience a new adapter set and a throw-away cosine head
trained on the experience's classes (SGD, cosine schedule), then prototypes of the new classes in
every subspace (training images, test transform) and the prototype complement for old classes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from baselines.ease.model import EaseNet, complement_prototypes, ensemble_logits
from cl_bench.models.heads import CosineLinear
from cl_bench.models.vit_parts import branch_sequences_per_pass
from cl_bench.training.template import CLBenchTemplate

__all__ = ["EASE"]


class EASE(CLBenchTemplate):
    def __init__(self, *, config, backbone, streams, device, plugins=()) -> None:
        m = config.method
        model = EaseNet(backbone.vit, m.adapter_dim, m.adapter_scale, m.adapter_dropout,
                         branch_sequences_per_pass(m.max_batch_sequences, device))
        super().__init__(model=model, config=config, streams=streams, backbone=backbone, device=device, plugins=plugins)

    def adapt_model(self) -> None:
        model = self.model
        current = model.add_adapter_set()
        n_new = self.streams.classes_per_experience[self.experience_index]
        model.proxy_head = CosineLinear(model.vit.embed_dim, n_new).to(self.device)
        model.set_trainable(current)

    def build_optimizer(self, params):
        run = self.config.run
        return torch.optim.SGD(params, lr=run.lr, momentum=self.config.method.momentum, weight_decay=run.weight_decay)

    def build_scheduler(self, optimizer):
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(self.train_epochs, 1), eta_min=0.0)

    def forward(self) -> torch.Tensor:
        model = self.model
        if self.is_training:
            return model.proxy_head(model.features(self.mb_x, [model.n_sets - 1])[0])
        sets = list(range(model.n_sets))
        features = model.features(self.mb_x, sets, batched=self.config.method.batched_subspaces)
        return ensemble_logits(features, model.prototypes, model.class_ranges, self.config.method.alpha)

    def criterion(self) -> torch.Tensor:
        if not self.is_training:
            return self._make_empty_loss()
        return F.cross_entropy(self.mb_output, self.mb_y - self.known_classes)

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

    def extra_state(self) -> dict:
        return {"n_sets": self.model.n_sets, "class_ranges": [list(r) for r in self.model.class_ranges]}

    def restore_structure(self, extra: dict) -> None:
        while self.model.n_sets < extra["n_sets"]:
            self.model.add_adapter_set()
        self.model.class_ranges[:] = [tuple(r) for r in extra["class_ranges"]]
        self.model.requires_grad_(False)
