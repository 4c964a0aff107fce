"""RanPAC as an Avalanche strategy: the first experience adapts the ViT through one PETL module and a
cosine head; after every experience (the first included) the frozen adapted features of its training
images (test transform) go through the fixed random projection into the ridge statistics, lambda is
chosen on that experience alone, and the linear classifier is solved again. Later experiences train
nothing by SGD."""

from __future__ import annotations

import torch
from avalanche.training.plugins.evaluation import default_evaluator
from torch import nn
from torch.utils.data import DataLoader

from cl_bench.baselines.first_session import FirstSessionNet, PetlOptions, frozen_tensors
from cl_bench.baselines.first_session_strategy import FirstSessionTemplate, check_petl
from cl_bench.baselines.ranpac.config import RIDGE_DTYPES, RanPACConfig
from cl_bench.baselines.ranpac.model import RanPACClassifier, select_ridge_lambda
from cl_bench.errors import StrategyArgumentError
from cl_bench.training.template import prepare_vit

__all__ = ["RanPAC", "RanPACNet"]


class RanPACNet(nn.Module):
    """The first-session network and, from the end of the first experience, the analytic classifier."""

    def __init__(self, vit: nn.Module, petl: str, options: PetlOptions) -> None:
        super().__init__()
        self.first_session = FirstSessionNet(vit, petl, options)
        self.classifier: RanPACClassifier | None = None


class RanPAC(FirstSessionTemplate):
    """RanPAC on a timm ViT (or a backbone tag), built like Avalanche's strategies:

        RanPAC(model=vit, train_mb_size=48, train_epochs=20, device="cuda")

    Defaults are the official CIFAR-100 row (adapter, M = 10,000, SGD 0.01, float32).
    ``projection_seed`` seeds the generator of the random projection (the runner passes the run's seed).
    """

    config_cls = RanPACConfig

    def __init__(self, *, model="vit_base_patch16_224.augreg_in21k", petl: str = "adapter", adapter_dim: int = 64,
                 adapter_scale: float = 0.1, adapter_dropout: float = 0.1, vpt_tokens: int = 5, momentum: float = 0.9,
                 projection_size: int = 10_000, ridge_dtype: str = "float32", ridge_lambda: float = 0.0,
                 ridge_ignore_nan: bool = False, cosine_classifier: bool = False, projection_seed: int = 0,
                 lr: float = 0.01, weight_decay: float = 5e-4, amp: str = "none", copy_model: bool = True,
                 train_mb_size: int = 48, train_epochs: int = 20, eval_mb_size: int = 128, device=None, plugins=None,
                 evaluator=default_evaluator, eval_every: int = -1, **base_kwargs) -> None:
        check_petl(petl)
        if ridge_dtype not in RIDGE_DTYPES:
            raise StrategyArgumentError(f"argument 'ridge_dtype' must be one of {', '.join(RIDGE_DTYPES)}; got {ridge_dtype!r}",
                                        key="ridge_dtype")
        if not isinstance(projection_size, int) or projection_size < 1:
            raise StrategyArgumentError(f"argument 'projection_size' must be a positive integer; got {projection_size!r}",
                                        key="projection_size")
        vit = prepare_vit(model, copy_model=copy_model)
        frozen = frozen_tensors(vit) if petl != "full" else nn.Module()  # before PETL joins the ViT's modules
        net = RanPACNet(vit, petl, PetlOptions(adapter_dim, adapter_scale, adapter_dropout, vpt_tokens))
        self.first_session = net.first_session
        self.projection_size, self.ridge_lambda, self.ridge_ignore_nan = projection_size, ridge_lambda, ridge_ignore_nan
        self.ridge_dtype = getattr(torch, ridge_dtype)
        self.cosine_classifier, self.projection_seed = cosine_classifier, projection_seed
        self.last_lambda: float | None = None
        self.last_lambda_losses: list[float] | None = None
        super().__init__(model=net, backbone=frozen, momentum=momentum, lr=lr, weight_decay=weight_decay, amp=amp,
                         train_mb_size=train_mb_size, train_epochs=train_epochs, eval_mb_size=eval_mb_size,
                         device=device, plugins=plugins, evaluator=evaluator, eval_every=eval_every, **base_kwargs)

    @classmethod
    def config_arguments(cls, config) -> dict:
        return {**super().config_arguments(config), "projection_seed": config.run.seed}

    def new_classifier(self) -> RanPACClassifier:
        """W from a generator of its own, so the projection depends on the seed only (not on how much
        global randomness the first experience consumed: a declared deviation from the reference)."""
        generator = torch.Generator().manual_seed(self.projection_seed)
        return RanPACClassifier(self.model.first_session.vit.embed_dim, self.projection_size, self.ridge_dtype,
                                generator=generator, cosine=self.cosine_classifier).to(self.device)

    def forward(self) -> torch.Tensor:
        if self.is_training:
            return self.first_session_logits()
        net = self.model
        features = net.first_session.adapted_features(self.mb_x)
        with torch.autocast(self.device.type, enabled=False):  # the projection and W_o in the ridge precision
            return net.classifier(features.float())[:, : self.seen_classes].float()

    def _after_training_exp(self, **kwargs) -> None:
        with torch.no_grad():
            self.update_classifier()
        super()._after_training_exp(**kwargs)

    def update_classifier(self) -> None:
        """Add this experience's statistics to G and Q, choose lambda, solve W_o."""
        net = self.model
        if net.classifier is None:  # the end of the first experience
            self.end_first_session()
            net.classifier = self.new_classifier()
        classifier = net.classifier
        classifier.grow(self.seen_classes)
        # The training images through the test transform, in an order fixed by the seed and the experience:
        # lambda is fitted on the first 80 % of the rows, so the order decides which images validate it.
        order = torch.Generator().manual_seed(self.projection_seed * 1000 + self.task_index)
        loader = DataLoader(self.experience.dataset.eval(), batch_size=self.eval_mb_size, shuffle=True, generator=order,
                            num_workers=self.num_workers)
        was_training = net.training
        net.eval()
        rows_H, rows_Y = [], []
        for x, y, *_ in loader:
            with self.autocast():
                features = net.first_session.adapted_features(x.to(self.device))
            H, Y = classifier.accumulate(features.float(), self.columns_of(y.to(self.device).long()))
            if self.ridge_lambda == 0:
                rows_H.append(H)
                rows_Y.append(Y)
        net.train(was_training)
        if self.ridge_lambda > 0:
            lam, losses = self.ridge_lambda, None
        else:
            lam, losses = select_ridge_lambda(torch.cat(rows_H), torch.cat(rows_Y), ignore_nan=self.ridge_ignore_nan)
        classifier.solve(lam)
        self.last_lambda, self.last_lambda_losses = lam, losses

    def experience_report(self) -> dict:
        """The ridge lambda of this experience (chosen or fixed) and every candidate's validation loss."""
        return {"ridge_lambda": self.last_lambda, "ridge_lambda_losses": self.last_lambda_losses}

    def extra_state(self) -> dict:
        classifier = self.model.classifier
        return {"classifier": classifier is not None, "lambdas": list(classifier.lambdas) if classifier is not None else []}

    def restore_structure(self, extra: dict) -> None:
        if extra["classifier"] and self.model.classifier is None:
            self.end_first_session()
            self.model.classifier = self.new_classifier()  # its tensors come from the checkpoint
            self.model.classifier.lambdas = list(extra["lambdas"])
