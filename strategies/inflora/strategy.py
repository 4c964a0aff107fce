"""InfLoRA as an Avalanche strategy (spec ``more_baselines_lora.md`` §2.4, §5).

Per experience: a new head and a new K/V pair per block; one no-grad pass over the experience's
training data (train transform) collects the attention inputs' Gram matrices, from which the frozen
down-projections are designed; Adam and CODA's per-epoch cosine train the up-projections and the
head on the experience's own columns; a second no-grad pass (trained pair active) updates the
DualGPM memory, and the pair is merged into K and V. Evaluation: every head, one ViT pass.
"""

from __future__ import annotations

import torch
from avalanche.training.plugins.evaluation import default_evaluator
from torch.utils.data import DataLoader

from cl_bench.baselines.coda_prompt.strategy import coda_cosine_factor
from cl_bench.errors import StrategyArgumentError
from cl_bench.strategies.inflora.config import InfLoRAConfig
from cl_bench.strategies.inflora.model import InfLoRANet, energy_threshold
from cl_bench.training.template import CLBenchTemplate, prepare_vit

__all__ = ["InfLoRA"]


class InfLoRA(CLBenchTemplate):
    """InfLoRA on a timm ViT (or a backbone tag), built like Avalanche's strategies:

        InfLoRA(model=vit, n_experiences=20, train_mb_size=128, train_epochs=20, device="cuda")

    ``n_experiences`` (the stream's length) is T of the threshold schedule
    ``eps_t = threshold_start + (threshold_end - threshold_start) t / T`` unless ``threshold_tasks``
    fixes it. Defaults are the official CIFAR-100 recipe (``configs/cifar100_inflora.json``).
    """

    config_cls = InfLoRAConfig
    task_head_in_training = True

    def __init__(self, *, model="vit_base_patch16_224.augreg_in21k", n_experiences: int | None = None,
                 rank: int = 10, threshold_start: float = 0.95, threshold_end: float = 1.0, threshold_tasks: int = 0,
                 merge: bool = True, lr: float = 0.0005, weight_decay: float = 0.0, amp: str = "none",
                 copy_model: bool = True, train_mb_size: int = 128, train_epochs: int = 20, eval_mb_size: int = 128,
                 device=None, plugins=None, evaluator=default_evaluator, eval_every: int = -1, **base_kwargs) -> None:
        vit = prepare_vit(model, copy_model=copy_model)
        if not isinstance(rank, int) or not 1 <= rank <= vit.embed_dim:
            raise StrategyArgumentError(f"argument 'rank' must be an integer in 1..{vit.embed_dim} (the ViT's width); "
                                        f"got {rank!r}", key="rank")
        if not 0.0 < threshold_start <= threshold_end <= 1.0:
            raise StrategyArgumentError(
                "arguments 'threshold_start' and 'threshold_end' must satisfy 0 < start <= end <= 1; "
                f"got {threshold_start} and {threshold_end}", key="threshold_start")
        schedule_tasks = threshold_tasks or n_experiences
        if not isinstance(schedule_tasks, int) or schedule_tasks < 1:
            raise StrategyArgumentError(
                "argument 'n_experiences' (the stream's number of experiences, T of the threshold schedule) is "
                f"needed unless 'threshold_tasks' is given; got n_experiences={n_experiences!r}, "
                f"threshold_tasks={threshold_tasks!r}", key="n_experiences")
        self.schedule_tasks, self.threshold_tasks = schedule_tasks, threshold_tasks
        self.threshold_start, self.threshold_end = threshold_start, threshold_end
        net = InfLoRANet(vit, rank=rank, merge=merge)
        super().__init__(model=net, backbone=vit, lr=lr, weight_decay=weight_decay, amp=amp,
                         train_mb_size=train_mb_size, train_epochs=train_epochs, eval_mb_size=eval_mb_size,
                         device=device, plugins=plugins, evaluator=evaluator, eval_every=eval_every, **base_kwargs)

    @classmethod
    def stream_arguments(cls, *, n_classes: int, n_experiences: int) -> dict:
        return {"n_experiences": n_experiences}

    # -- per experience -----------------------------------------------------------------------
    def adapt_model(self) -> None:
        if self.task_index >= self.schedule_tasks:
            key = "threshold_tasks" if self.threshold_tasks else "n_experiences"
            raise StrategyArgumentError(
                f"argument '{key}' gives T = {self.schedule_tasks} tasks to the threshold schedule, but experience "
                f"{self.experience_index} is task {self.task_index + 1}; the threshold would pass threshold_end",
                key=key)
        self.model.add_task(self.seen_classes - self.known_classes)
        self.model.set_trainable()

    def _before_training_exp(self, **kwargs) -> None:
        super()._before_training_exp(**kwargs)  # registers the classes, adds the pair and head, builds Adam
        # The designed down-projections are frozen and outside the optimiser: designing them now is safe.
        self.model.design_down_(self._collect_grams())

    def _after_training_exp(self, **kwargs) -> None:
        model = self.model
        grams = self._collect_grams()  # the trained pair is active now
        model.update_memory_(grams, energy_threshold(self.task_index, self.schedule_tasks,
                                                     self.threshold_start, self.threshold_end))
        model.finish_task_()
        super()._after_training_exp(**kwargs)

    @torch.no_grad()
    def _collect_grams(self) -> list[torch.Tensor]:
        """One pass over the experience's training data (train transform, shuffled by the global RNG,
        float32) with the per-block Gram collectors attached (spec §2.2 step 1)."""
        loader = DataLoader(self.experience.dataset.train(), batch_size=self.train_mb_size, shuffle=True,
                            **self._loader_arguments(self.num_workers, None, False, {}))
        model = self.model
        was_training = model.training
        model.eval()  # the official loop runs in eval mode too
        with model.collect_grams() as collector:
            for x, *_ in loader:
                model.features(x.to(self.device))
        model.train(was_training)
        return collector.grams

    def build_optimizer(self, params):
        return torch.optim.Adam(params, lr=self.lr, betas=(0.9, 0.999), weight_decay=self.weight_decay)

    def build_scheduler(self, optimizer):
        epochs = max(self.train_epochs, 1)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: coda_cosine_factor(e, epochs))

    # -- iteration ----------------------------------------------------------------------------
    def forward(self) -> torch.Tensor:
        if self.is_training:
            return self.model.train_logits(self.mb_x)  # the current head only
        return self.model(self.mb_x)  # every head, merged weights

    def head_parameters(self):
        return list(self.model.heads.heads[-1].parameters()) if len(self.model.heads) else []

    def experience_report(self) -> dict:
        """The protected input dimensions per block after the DualGPM update (spec §2.3)."""
        dims = [m.size if not bool(m.retain) else self.model.vit.embed_dim - m.size for m in self.model.memories]
        return {"protected_dims": dims, "threshold": energy_threshold(
            self.task_index, self.schedule_tasks, self.threshold_start, self.threshold_end)}

    # -- checkpoints --------------------------------------------------------------------------
    def extra_state(self) -> dict:
        return {"task_sizes": self.model.heads.sizes}

    def restore_structure(self, extra: dict) -> None:
        # Tensors (folded K/V updates or the kept pairs, memories, heads) come from the checkpoint.
        for n_classes in extra["task_sizes"]:
            self.model.add_task(n_classes)
            self.model.finish_task_()
