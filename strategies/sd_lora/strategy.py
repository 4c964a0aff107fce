"""SD-LoRA as an Avalanche strategy (spec ``more_baselines_lora.md`` §3, §5).

Per experience: the finished component becomes a frozen unit direction, a new Q/V pair and new
head rows are added, every magnitude is re-created (official), and SGD with momentum trains the
new pair, all magnitudes and the new rows at a constant rate, with CE on the experience's own
columns. Evaluation: the full head, one ViT pass with the components folded into Q and V.
"""

from __future__ import annotations

import torch
from avalanche.training.plugins.evaluation import default_evaluator

from cl_bench.errors import StrategyArgumentError
from cl_bench.strategies.sd_lora.config import SDLoRAConfig
from cl_bench.strategies.sd_lora.model import DIRECTION_NORMS, SDLoRANet, rank_for_task
from cl_bench.training.template import CLBenchTemplate, prepare_vit

__all__ = ["SDLoRA"]


class SDLoRA(CLBenchTemplate):
    """SD-LoRA on a timm ViT (or a backbone tag), built like Avalanche's strategies:

        SDLoRA(model=vit, train_mb_size=128, train_epochs=20, device="cuda")

    Any number of experiences (one magnitude per task, no fixed slots). ``rank_reduction`` is
    SD-LoRA-RR. Defaults are the official CIFAR-100 recipe (``models/sdlora.py``, ``sdlora_c100.json``).
    """

    config_cls = SDLoRAConfig
    task_head_in_training = True

    def __init__(self, *, model="vit_base_patch16_224.augreg_in21k", rank: int = 10, momentum: float = 0.9,
                 magnitude_init: float = 0.8, reset_magnitudes: bool = True, direction_norm: str = "factors",
                 rank_reduction: bool = False, rr_milestones: tuple[int, ...] = (4, 8), rr_ranks: tuple[int, ...] = (8, 6),
                 lr: float = 0.008, weight_decay: float = 0.0, amp: str = "none", copy_model: bool = True,
                 train_mb_size: int = 128, train_epochs: int = 20, eval_mb_size: int = 128, device=None, plugins=None,
                 evaluator=default_evaluator, eval_every: int = -1, **base_kwargs) -> None:
        vit = prepare_vit(model, copy_model=copy_model)
        for key, values in (("rank", (rank,)), ("rr_ranks", tuple(rr_ranks) if rank_reduction else ())):
            if any(not isinstance(v, int) or not 1 <= v <= vit.embed_dim for v in values):
                raise StrategyArgumentError(f"argument '{key}' must be an integer in 1..{vit.embed_dim} (the ViT's "
                                            f"width); got {rank if key == 'rank' else tuple(rr_ranks)!r}", key=key)
        if rank_reduction and len(tuple(rr_milestones)) != len(tuple(rr_ranks)):
            raise StrategyArgumentError(f"arguments 'rr_milestones' and 'rr_ranks' need one rank per milestone; got "
                                        f"{tuple(rr_milestones)} and {tuple(rr_ranks)}", key="rr_ranks")
        if direction_norm not in DIRECTION_NORMS:
            raise StrategyArgumentError(f"argument 'direction_norm' must be one of {', '.join(DIRECTION_NORMS)}; got "
                                        f"{direction_norm!r}", key="direction_norm")
        self.rank, self.momentum = rank, momentum
        self.rank_reduction, self.rr_milestones, self.rr_ranks = rank_reduction, tuple(rr_milestones), tuple(rr_ranks)
        net = SDLoRANet(vit, magnitude_init, reset_magnitudes, direction_norm)
        super().__init__(model=net, backbone=vit, lr=lr, weight_decay=weight_decay, amp=amp,
                         train_mb_size=train_mb_size, train_epochs=train_epochs, eval_mb_size=eval_mb_size,
                         device=device, plugins=plugins, evaluator=evaluator, eval_every=eval_every, **base_kwargs)

    def rank_of_task(self, task: int) -> int:
        if not self.rank_reduction:
            return self.rank
        return rank_for_task(task, self.rank, self.rr_milestones, self.rr_ranks)

    # -- per experience -----------------------------------------------------------------------
    def adapt_model(self) -> None:
        # Freezes and normalises the finished component, adds the new one, re-creates the magnitudes,
        # grows the head and sets what trains.
        self.model.add_task(self.seen_classes - self.known_classes, self.rank_of_task(self.task_index))

    def build_optimizer(self, params):
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def _after_training_exp(self, **kwargs) -> None:
        self.model.finish_task_()
        super()._after_training_exp(**kwargs)

    # -- iteration ----------------------------------------------------------------------------
    def forward(self) -> torch.Tensor:
        if self.is_training:
            return self.model.train_logits(self.mb_x)  # the current task's logits only
        return self.model(self.mb_x)  # the full head

    def head_parameters(self):
        return list(self.model.heads.heads[-1].parameters()) if len(self.model.heads) else []

    def experience_report(self) -> dict:
        """The learned magnitudes (the official logs print them) and the components' ranks."""
        return {"magnitudes": [float(m) for m in self.model.magnitudes], "ranks": self.model.ranks}

    # -- checkpoints --------------------------------------------------------------------------
    def extra_state(self) -> dict:
        return {"task_sizes": self.model.heads.sizes, "ranks": self.model.ranks}

    def restore_structure(self, extra: dict) -> None:
        # The factors (normalised ones included), magnitudes and head rows come from the checkpoint.
        for n_classes, rank in zip(extra["task_sizes"], extra["ranks"]):
            self.model.add_task(n_classes, rank)
        self.model.finish_task_()
