"""The Avalanche template every strategy of the suite subclasses.

What it adds to ``SupervisedTemplate``, and why:

- ``make_optimizer`` builds a fresh optimizer and per-epoch schedule each experience over the
  trainable parameters only (Avalanche's default keeps one optimizer holding every parameter);
- plugins that add parameters implement ``adapt_model(strategy)``. It runs inside
  ``model_adaptation``, before the method's own ``adapt_model`` and before the optimizer is
  built; a plugin's ``before_training_exp`` runs after that, too late for new parameters;
- plain data loaders: shuffled training batches from the global RNG, and evaluation batches
  shuffled by a generator of their own, so test batches mix every seen class and evaluation
  consumes none of the training randomness;
- ``learned_state``/``load_learned_state`` for checkpoints: everything but the frozen backbone.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from avalanche.training.templates import SupervisedTemplate
from avalanche.training.utils import trigger_plugins
from torch import nn
from torch.utils.data import DataLoader

__all__ = ["CLBenchTemplate"]


def _placeholder_optimizer() -> torch.optim.Optimizer:
    """Avalanche wants an optimizer at construction; the real one is built per experience."""
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.0)


class CLBenchTemplate(SupervisedTemplate):
    #: CODA-Prompt's reference drops the last incomplete training batch; the others keep it.
    drop_last_train_batch: bool = False

    def __init__(self, *, model: nn.Module, config, streams, backbone, device: torch.device,
                 plugins: Sequence[Any] = ()) -> None:
        self.config = config
        self.streams = streams
        self.backbone = backbone
        self.scheduler = None
        self.trainable_count = 0
        self.trainable_head_count = 0
        #: Named loss terms of the last iteration (detached) that plugins or the method add; logged.
        self.loss_terms: dict[str, torch.Tensor] = {}
        self.eval_shuffle_seed = 0
        with warnings.catch_warnings():  # metrics go to the run record and W&B, not to Avalanche loggers
            warnings.filterwarnings("ignore", message="No loggers specified")
            super().__init__(
                model=model,
                optimizer=_placeholder_optimizer(),
                criterion=nn.CrossEntropyLoss(),
                train_mb_size=config.run.batch_size,
                train_epochs=config.run.epochs,
                eval_mb_size=config.run.eval_batch_size,
                device=device,
                plugins=list(plugins),
                evaluator=None,
            )
        # By name, fixed now: moving the model to a device replaces tensors, names stay.
        self._backbone_names = {
            name for name, t in [*model.named_parameters(), *model.named_buffers()] if id(t) in backbone.tensor_ids
        }

    # -- where we are in the stream -----------------------------------------------------------
    @property
    def experience_index(self) -> int:
        return self.experience.current_experience

    @property
    def known_classes(self) -> int:
        """Classes of the experiences before the current one (labels below this are old)."""
        return self.streams.offsets[self.experience_index]

    @property
    def seen_classes(self) -> int:
        return self.streams.offsets[self.experience_index + 1]

    # -- optimizer and schedule ---------------------------------------------------------------
    def build_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        raise NotImplementedError

    def build_scheduler(self, optimizer: torch.optim.Optimizer):
        return None

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def head_parameters(self) -> list[nn.Parameter]:
        """The classifier head's tensors, counted apart from the adapters or prompts."""
        return []

    def autocast(self):
        """The precision context of forward passes (``--amp bf16``); plugins that run their own
        forward passes use it too, so every pass of an iteration has the same precision."""
        if self.config.run.amp == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def make_optimizer(self, **kwargs) -> None:
        params = self.trainable_parameters()
        self.trainable_count = sum(p.numel() for p in params)
        self.trainable_head_count = sum(p.numel() for p in self.head_parameters() if p.requires_grad)
        self.optimizer = self.build_optimizer(params) if params else _placeholder_optimizer()
        self.scheduler = self.build_scheduler(self.optimizer) if params else None
        self.optimized_param_id = True

    def _after_training_epoch(self, **kwargs) -> None:
        if self.scheduler is not None:
            self.scheduler.step()
        super()._after_training_epoch(**kwargs)

    # -- model growth -------------------------------------------------------------------------
    def adapt_model(self) -> None:
        """Method hook: prepare the model for the experience about to be trained."""

    def model_adaptation(self, model: nn.Module | None = None) -> nn.Module:
        model = self.model if model is None else model
        if self.is_training:
            trigger_plugins(self, "adapt_model")  # plugins grow the structure first,
            self.adapt_model()  # then the method sets its head and trainable set
        return model.to(self.device)

    # -- data ---------------------------------------------------------------------------------
    def make_train_dataloader(self, num_workers: int = 0, **kwargs) -> None:
        self.dataloader = DataLoader(
            self.adapted_dataset,
            batch_size=self.train_mb_size,
            shuffle=True,
            drop_last=self.drop_last_train_batch,
            num_workers=self.config.run.num_workers,
            pin_memory=self.device.type == "cuda",
        )

    def make_eval_dataloader(self, num_workers: int = 0, **kwargs) -> None:
        self.dataloader = DataLoader(
            self.adapted_dataset,
            batch_size=self.eval_mb_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(self.eval_shuffle_seed),
            num_workers=self.config.run.num_workers,
            pin_memory=self.device.type == "cuda",
        )

    @torch.no_grad()
    def class_means(self, features: Callable[[torch.Tensor], torch.Tensor], experience=None) -> torch.Tensor:
        """Per-class mean of ``features(x)`` over the experience's training images, seen through
        the test transform (prototype methods). Rows follow the experience's class positions."""
        experience = self.experience if experience is None else experience
        start = self.streams.offsets[experience.current_experience]
        n_classes = self.streams.classes_per_experience[experience.current_experience]
        loader = DataLoader(experience.dataset.eval(), batch_size=self.eval_mb_size, shuffle=False,
                            num_workers=self.config.run.num_workers)
        was_training = self.model.training
        self.model.eval()
        sums, counts = None, torch.zeros(n_classes, device=self.device)
        for x, y, *_ in loader:
            f = features(x.to(self.device))
            local = (y.to(self.device) - start).long()
            if sums is None:
                sums = torch.zeros((n_classes,) + tuple(f.shape[1:]), device=self.device, dtype=f.dtype)
            sums.index_add_(0, local, f)
            counts += torch.bincount(local, minlength=n_classes)
        self.model.train(was_training)
        return sums / counts.view((-1,) + (1,) * (sums.dim() - 1))

    # -- loss ---------------------------------------------------------------------------------
    def criterion(self) -> torch.Tensor:
        if not self.is_training:  # evaluation needs predictions only
            return self._make_empty_loss()
        return F.cross_entropy(self.mb_output, self.mb_y)

    # -- checkpoints --------------------------------------------------------------------------
    def experience_report(self) -> dict[str, Any]:
        """Method-specific facts about the experience just trained, kept in the run record."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Plain values the method needs to rebuild its structure (e.g. how many task branches)."""
        return {}

    def restore_structure(self, extra: dict[str, Any]) -> None:
        """Grow the model to the structure described by ``extra_state`` before tensors load."""

    def learned_state(self) -> dict[str, Any]:
        tensors = {name: t for name, t in self.model.state_dict().items() if name not in self._backbone_names}
        return {"tensors": tensors, "extra": self.extra_state()}

    def load_learned_state(self, state: dict[str, Any]) -> None:
        self.restore_structure(state["extra"])
        missing, unexpected = self.model.load_state_dict(state["tensors"], strict=False)
        learned_missing = [name for name in missing if name not in self._backbone_names]
        if learned_missing or unexpected:
            raise RuntimeError(f"checkpoint does not fit the model: missing {learned_missing[:5]}, unexpected {unexpected[:5]}")

    def stored_parameters(self) -> int:
        """Numbers kept beyond the frozen backbone (adapters, prompts, heads, prototypes, ...)."""
        return sum(t.numel() for t in self.learned_state()["tensors"].values())
