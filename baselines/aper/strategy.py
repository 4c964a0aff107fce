"""APER as an Avalanche strategy: the first experience adapts the ViT through one PETL module and a
cosine head (then frozen, the head thrown away); after every experience the new classes get
prototypes of ``[frozen ViT ; adapted ViT]`` features of their training images (test transform),
and a test image goes to the most cosine-similar prototype. Later experiences train nothing."""

from __future__ import annotations

import torch
from avalanche.training.plugins.evaluation import default_evaluator
from torch import nn

from cl_bench.baselines.aper.config import AperConfig
from cl_bench.baselines.aper.model import AperNet
from cl_bench.baselines.first_session import PetlOptions, frozen_tensors
from cl_bench.baselines.first_session_strategy import FirstSessionTemplate, check_petl
from cl_bench.training.template import prepare_vit

__all__ = ["APER"]


class APER(FirstSessionTemplate):
    """APER on a timm ViT (or a backbone tag), built like Avalanche's strategies:

        APER(model=vit, petl="adapter", train_mb_size=48, train_epochs=20, device="cuda")

    Defaults are APER-Adapter's official CIFAR-100 5_5 config; ``petl`` picks the SSF, VPT or
    Finetune (``full``) variant.
    """

    config_cls = AperConfig

    def __init__(self, *, model="vit_base_patch16_224.augreg_in21k", petl: str = "adapter", adapter_dim: int = 64,
                 adapter_scale: float = 0.1, adapter_dropout: float = 0.1, vpt_tokens: int = 5, momentum: float = 0.9,
                 lr: float = 0.01, weight_decay: float = 5e-4, amp: str = "none", copy_model: bool = True,
                 train_mb_size: int = 48, train_epochs: int = 20, eval_mb_size: int = 128, device=None, plugins=None,
                 evaluator=default_evaluator, eval_every: int = -1, **base_kwargs) -> None:
        check_petl(petl)
        vit = prepare_vit(model, copy_model=copy_model)
        frozen = frozen_tensors(vit) if petl != "full" else nn.Module()  # before PETL joins the ViT's modules
        net = AperNet(vit, petl, PetlOptions(adapter_dim, adapter_scale, adapter_dropout, vpt_tokens))
        if petl == "full":  # the whole ViT trains; its frozen pretrained copy is what checkpoints leave out
            frozen = frozen_tensors(net.first_session.pretrained)
        self.first_session = net.first_session
        super().__init__(model=net, backbone=frozen, momentum=momentum, lr=lr, weight_decay=weight_decay, amp=amp,
                         train_mb_size=train_mb_size, train_epochs=train_epochs, eval_mb_size=eval_mb_size,
                         device=device, plugins=plugins, evaluator=evaluator, eval_every=eval_every, **base_kwargs)

    def forward(self) -> torch.Tensor:
        if self.is_training:
            return self.first_session_logits()
        return self.model(self.mb_x)

    def _after_training_exp(self, **kwargs) -> None:
        self.end_first_session()

        def features(x: torch.Tensor) -> torch.Tensor:
            with self.autocast():
                return self.model.features(x).float()  # prototypes are float32 means

        self.model.prototypes.add(self.class_means(features))
        super()._after_training_exp(**kwargs)
