"""SD-LoRA's network (spec ``more_baselines_lora.md`` §3), on the stock timm ViT.

- LoRA on **Q and V** of every block (``cl_bench.models.lora``), one (down, up) pair per task:
  down kaiming-uniform(a=sqrt 5) and up zero, both trained during their task.
- When the next task starts, the finished pair is frozen and normalised to a unit *direction*:
  each factor divided by its Frobenius norm (the official ``‖up‖_F ‖down‖_F``), or both by
  ``sqrt ‖up down‖_F`` (the paper's figure, ``direction_norm="product"``). The current pair stays
  un-normalised.
- One learnable magnitude per task, shared by all blocks and by Q and V. The official code
  re-creates every magnitude at 0.8 when a task starts (``reset_magnitudes``); it holds 21 slots,
  here there are exactly t + 1, so any number of tasks runs.
- A growing linear head (PILOT ``SimpleLinear`` init); the training loss sees the current task's
  logits only, so old rows never get a gradient (kept as frozen per-task blocks).

    Q/V(h) = W h + b + sum_{i<t} a_i * dir_i(h) + a_t * up_t(down_t h)
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from cl_bench.models.heads import TaskLinearHeads
from cl_bench.models.lora import LoRAQKV, LowRankAdapter, count_trainable, inject_lora

__all__ = ["DIRECTION_NORMS", "rank_for_task", "normalise_direction_", "SDLoRANet"]

DIRECTION_NORMS = ("factors", "product")


def rank_for_task(task: int, rank: int, milestones: Sequence[int] = (), ranks: Sequence[int] = ()) -> int:
    """SD-LoRA-RR's rank schedule: ``rank`` before the first milestone, then ``ranks[i]`` from
    ``milestones[i]`` on (official commented code and LibContinual: 10, then 8 from task 4, 6 from task 8)."""
    current = rank
    for milestone, reduced in zip(milestones, ranks):
        if task >= milestone:
            current = reduced
    return current


@torch.no_grad()
def normalise_direction_(adapter: LowRankAdapter, norm: str = "factors") -> None:
    """Rescale both factors in place so ``up @ down`` becomes the adapter's unit direction.

    An all-zero factor (only possible without training, e.g. ``epochs 0``) is left as it is: its
    direction is zero, where the reference divides by zero.
    """
    down, up = adapter.down.weight, adapter.up.weight
    if norm == "factors":
        down_norm, up_norm = float(down.norm()), float(up.norm())
        if down_norm > 0 and up_norm > 0:
            down.div_(down_norm)
            up.div_(up_norm)
    elif norm == "product":
        product_norm = float((up @ down).norm())
        if product_norm > 0:
            scale = math.sqrt(product_norm)
            down.div_(scale)
            up.div_(scale)
    else:
        raise ValueError(f"norm must be one of {DIRECTION_NORMS}; got {norm!r}")


class SDLoRANet(nn.Module):
    """A frozen timm ViT with SD-LoRA's Q/V components, per-task magnitudes and a growing head.

    Task lifecycle (the strategy drives it): ``add_task`` (freezes and normalises the previous
    component, adds the new one, re-creates the magnitudes, grows the head) -> train
    (``train_logits``) -> ``finish_task_`` (freeze).
    """

    def __init__(self, vit: nn.Module, magnitude_init: float = 0.8, reset_magnitudes: bool = True,
                 direction_norm: str = "factors") -> None:
        super().__init__()
        if direction_norm not in DIRECTION_NORMS:
            raise ValueError(f"direction_norm must be one of {DIRECTION_NORMS}; got {direction_norm!r}")
        self.vit = vit.requires_grad_(False)
        self.magnitude_init = magnitude_init
        self.reset_magnitudes = reset_magnitudes
        self.direction_norm = direction_norm
        self.wrappers: list[LoRAQKV] = inject_lora(vit, ("q", "v"), orthogonal_down=False)
        self.heads = TaskLinearHeads(vit.embed_dim, init="linear")
        self.magnitudes = nn.ParameterList()
        #: Components already frozen and normalised (all but the current one once a task started).
        self.n_directions = 0

    @property
    def current_task(self) -> int:
        return len(self.heads) - 1

    @property
    def ranks(self) -> list[int]:
        return [pair.q.rank for pair in self.wrappers[0].pairs]

    # -- structure ----------------------------------------------------------------------------
    def add_task(self, n_classes: int, rank: int) -> int:
        """Freeze and normalise the finished component, add a new one at ``rank``, grow the head,
        and give every task a magnitude (all re-created at ``magnitude_init`` by default)."""
        device = next(self.vit.parameters()).device
        self.freeze_directions_()
        for wrapper in self.wrappers:
            wrapper.add_pair(rank)
        self.heads.add(n_classes, device=device)
        n_tasks = len(self.heads)
        if self.reset_magnitudes:
            self.magnitudes = nn.ParameterList(self._magnitude(device) for _ in range(n_tasks))
        else:
            self.magnitudes.append(self._magnitude(device))
        self.set_trainable()
        return self.current_task

    def _magnitude(self, device) -> nn.Parameter:
        return nn.Parameter(torch.tensor(float(self.magnitude_init), device=device))

    @torch.no_grad()
    def freeze_directions_(self) -> None:
        """Normalise the components not normalised yet and freeze them (called before a new one is added)."""
        n_pairs = len(self.wrappers[0].pairs)
        for wrapper in self.wrappers:
            for pair in wrapper.pairs[self.n_directions: n_pairs]:
                for adapter in pair.adapters():
                    normalise_direction_(adapter, self.direction_norm)
                pair.requires_grad_(False)
        self.n_directions = n_pairs

    def set_trainable(self) -> None:
        """The current component (both factors, Q and V, every block), every magnitude, the newest head block."""
        self.requires_grad_(False)
        for wrapper in self.wrappers:
            wrapper.pairs[-1].requires_grad_(True)
        for magnitude in self.magnitudes:
            magnitude.requires_grad_(True)
        self.heads.heads[-1].requires_grad_(True)

    def finish_task_(self) -> None:
        self.requires_grad_(False)

    def trainable_parameters_count(self) -> int:
        return count_trainable(self)

    def _route(self) -> None:
        terms = [(i, magnitude, magnitude) for i, magnitude in enumerate(self.magnitudes)]
        for wrapper in self.wrappers:
            wrapper.groups = [terms]

    # -- forward passes -----------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        self._route()
        return self.vit(x)

    def train_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The current task's logits only (the reference's CE on ``logits[:, n_known:]``)."""
        return self.heads.heads[-1](self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The full head over every seen class, one ViT pass (folded into Q and V without autograd)."""
        return self.heads(self.features(x))
