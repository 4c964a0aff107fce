"""What the RanPAC and APER strategies share (spec more_baselines_prompt_analytic.md §7.1): the first
experience trains one PETL module and a throw-away cosine head (SGD with momentum, weight decay on
everything trainable, cosine schedule per epoch over that experience's epochs); every later
experience trains nothing (zero epochs, no trainable parameter), and the method's classifier is
updated in ``_after_training_exp``."""

from __future__ import annotations

import torch
from torch import nn

from cl_bench.errors import StrategyArgumentError
from cl_bench.training.template import CLBenchTemplate

from .first_session import PETL_KINDS, FirstSessionNet

__all__ = ["FirstSessionTemplate", "check_petl"]


def check_petl(petl: str) -> None:
    if petl not in PETL_KINDS:
        raise StrategyArgumentError(f"argument 'petl' must be one of {', '.join(PETL_KINDS)}; got {petl!r}", key="petl")


class FirstSessionTemplate(CLBenchTemplate):
    """Subclasses set ``self.first_session`` (the ``FirstSessionNet`` inside their model) before
    calling ``super().__init__``."""

    first_session: FirstSessionNet

    def __init__(self, *, momentum: float, train_epochs: int, **kwargs) -> None:
        self.momentum = momentum
        #: The first experience's epochs; later experiences train none.
        self.first_session_epochs = train_epochs
        super().__init__(train_epochs=train_epochs, **kwargs)

    def _before_training_exp(self, **kwargs) -> None:
        # Set before the plugins hear of the experience: nothing trains after the first one.
        first = len(self.task_offsets) == 1  # no experience registered yet
        self.train_epochs = self.first_session_epochs if first else 0
        super()._before_training_exp(**kwargs)  # registers the classes, adapts the model, builds the optimiser

    def adapt_model(self) -> None:
        if self.task_index == 0 and self.first_session.head is None:
            self.first_session.start_first_session(self.seen_classes)

    def build_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def build_scheduler(self, optimizer):
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(self.first_session_epochs, 1), eta_min=0.0)

    def head_parameters(self):
        head = self.first_session.head
        return list(head.parameters()) if head is not None else []

    def first_session_logits(self) -> torch.Tensor:
        """Training logits of the first experience: ``sigma * cos(f_A(x), w_c)`` over its classes."""
        return self.first_session(self.mb_x)

    def end_first_session(self) -> None:
        """After the first experience: the PETL module is frozen and the head thrown away."""
        if self.first_session.head is not None:
            self.first_session.freeze()
