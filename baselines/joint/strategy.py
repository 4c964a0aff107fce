"""Joint (the upper bound) as an Avalanche strategy: Finetune's network and optimiser, trained once on
the union of every experience it is given, with every class of that union in one cross-entropy.

How it meets the protocol:

- ``train(experiences)`` takes one experience or several (a whole stream, as Avalanche's own
  ``JointTraining``): their classes get columns experience by experience, as the other strategies'
  do, and their training sets are concatenated into one experience trained for ``train_epochs``;
- a later ``train`` call adds its experiences to the union and trains again on all of it from the
  initial weights (the trainable part's values at the first call are kept on the CPU for that), so a
  plain Avalanche loop over experiences gets, after experience t, Joint on experiences 0..t;
- the suite's runner calls ``train`` once with the whole training stream (``trains_on_union``), then
  evaluates the one trained network after every experience t over the classes of experiences
  0..t only (``score_experiences(t + 1)``), as the protocol scores every method. Its ``R`` matrix is
  therefore one network seen through growing class sets: Last is the bound of Last, and a drop down a
  column comes from more classes competing, not from forgetting.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from avalanche.benchmarks import DatasetExperience
from avalanche.training.plugins.evaluation import default_evaluator

from cl_bench.baselines.finetune.strategy import ReferenceRowTemplate
from cl_bench.baselines.joint.config import JointConfig
from cl_bench.baselines.joint.model import joint_loss

__all__ = ["Joint"]


def union_experience(experiences: list) -> DatasetExperience:
    """One experience holding the training sets of ``experiences`` (in their order)."""
    data = experiences[0].dataset
    for experience in experiences[1:]:
        data = data.concat(experience.dataset)
    return DatasetExperience(dataset=data, current_experience=experiences[0].current_experience)


class Joint(ReferenceRowTemplate):
    """Joint on a timm ViT (or a backbone tag), built like Avalanche's strategies:

        joint = Joint(model=vit, trainable="full", train_mb_size=128, train_epochs=20, device="cuda")
        joint.train(benchmark.train_stream)        # once, on the union of every experience

    Defaults are Finetune's (PILOT's ``exps/finetune.json`` budget) with one weight decay.
    """

    config_cls = JointConfig
    #: The runner trains it once on the whole training stream, then scores it experience by experience.
    trains_on_union = True

    def __init__(self, *, model="vit_base_patch16_224.augreg_in21k", trainable: str = "full", adapter_dim: int = 64,
                 adapter_scale: float = 0.1, adapter_dropout: float = 0.1, vpt_tokens: int = 5, momentum: float = 0.9,
                 lr_schedule: str = "constant", lr: float = 0.001, weight_decay: float = 5e-4, amp: str = "none",
                 copy_model: bool = True, train_mb_size: int = 128, train_epochs: int = 20, eval_mb_size: int = 128,
                 device=None, plugins=None, evaluator=default_evaluator, eval_every: int = -1, **base_kwargs) -> None:
        super().__init__(model=model, trainable=trainable, adapter_dim=adapter_dim, adapter_scale=adapter_scale,
                         adapter_dropout=adapter_dropout, vpt_tokens=vpt_tokens, momentum=momentum,
                         lr_schedule=lr_schedule, copy_model=copy_model, lr=lr, weight_decay=weight_decay, amp=amp,
                         train_mb_size=train_mb_size, train_epochs=train_epochs, eval_mb_size=eval_mb_size,
                         device=device, plugins=plugins, evaluator=evaluator, eval_every=eval_every, **base_kwargs)
        self.given: list = []  # every experience trained on so far
        self.pending: list = []  # those of the current call, whose classes are not registered yet
        self.initial_state: dict[str, torch.Tensor] | None = None
        #: Experiences whose classes are scored at evaluation (None: every class trained).
        self.scored_experiences: int | None = None

    def train(self, experiences: Any, eval_streams=None, **kwargs):
        """Train once on the union of ``experiences`` and every experience of earlier calls."""
        experiences = list(experiences) if isinstance(experiences, Iterable) else [experiences]
        if self.initial_state is None:
            self.initial_state = {name: p.detach().cpu().clone()
                                  for name, p in self.model.named_parameters() if p.requires_grad}
        elif self.given:  # train again on the larger union, from the start
            named = dict(self.model.named_parameters())
            with torch.no_grad():
                for name, value in self.initial_state.items():
                    named[name].copy_(value)
            self.model.head = None  # a fresh head over every class of the union
        self.pending = experiences
        self.given = self.given + experiences
        self.scored_experiences = None
        return super().train(union_experience(self.given), eval_streams=[experiences] if eval_streams is None else eval_streams,
                             **kwargs)

    def _register_classes(self, experience) -> None:
        for original in self.pending:  # columns experience by experience, as the other strategies assign them
            super()._register_classes(original)
        self.pending = []

    def criterion(self) -> torch.Tensor:
        if not self.is_training:
            return self._make_empty_loss()
        return joint_loss(self.mb_output, self.mb_columns)

    def score_experiences(self, n: int | None) -> None:
        """Score the classes of the first ``n`` experiences trained (None: all), as the protocol scores
        every method after experience ``n - 1``."""
        if n is not None and not 1 <= n <= len(self.task_offsets) - 1:
            raise ValueError(f"cannot score {n} experiences: {len(self.task_offsets) - 1} were trained")
        self.scored_experiences = n

    def forward(self) -> torch.Tensor:
        logits = self.model(self.mb_x)
        if self.is_training or self.scored_experiences is None:
            return logits[:, : self.seen_classes]
        return logits[:, : self.task_offsets[self.scored_experiences]]

    def label_space(self, logits: torch.Tensor, first_column: int = 0) -> torch.Tensor:
        """At a scored evaluation, labels up to the largest scored one only (the protocol's width after
        experience ``n - 1``), not up to the largest trained."""
        if self.is_training or self.scored_experiences is None:
            return super().label_space(logits, first_column)
        labels = self.class_labels[: logits.shape[1]]
        width = max(labels) + 1
        if labels == list(range(width)):
            return logits
        out = logits.new_full((logits.shape[0], width), float("-inf"))
        out[:, torch.tensor(labels, device=logits.device)] = logits
        return out

    def experience_report(self) -> dict:
        return {"scored_experiences": self.scored_experiences, "trained_classes": self.seen_classes}
