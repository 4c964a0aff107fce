"""CODA-Prompt's component pool (spec baselines.md §3.1, official ``models/zoo.py`` ``CodaPrompt``).

Per prompted layer: components P (M, Lp, D), keys K (M, D) and attention vectors A (M, D). Task
``t`` owns rows ``[t*pt, (t+1)*pt)`` with ``pt = M // n_tasks``: during training the earlier rows
are detached and later ones unused; at test rows ``[0, (t+1)*pt)`` take part. Each new task's rows
start orthogonal to all earlier rows (Gram-Schmidt), which creates new parameters, so the
optimizer is rebuilt afterwards (it is, every experience).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cl_bench.models.prompting import PromptedViT

__all__ = ["gram_schmidt_rows", "ortho_penalty", "CodaPromptPool", "CodaPromptNet"]

_PROJECTION_EPS = 1e-8


def gram_schmidt_rows(weight: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Rows ``[start, stop)`` replaced by unit vectors drawn from ``randn`` and made orthogonal to
    every earlier row as it is now (classical Gram-Schmidt, as the official ``gram_schmidt``);
    rows before ``start`` are kept, rows after ``stop`` are zero."""
    shape = weight.shape
    vv = weight.detach().reshape(shape[0], -1)
    uu = torch.zeros_like(vv)
    uu[:start] = vv[:start]
    for k in range(start, stop):
        while True:
            v = torch.randn_like(vv[k])
            previous = uu[:k]
            norms = (previous * previous).sum(dim=1)
            if k and bool((norms < _PROJECTION_EPS).any()):
                continue  # the reference restarts when an earlier row is (near) zero
            projection = ((previous @ v) / norms) @ previous if k else torch.zeros_like(v)
            uu[k] = v - projection
            break
    uu[start:stop] = uu[start:stop] / uu[start:stop].norm(dim=1, keepdim=True)
    return uu.reshape(shape)


def ortho_penalty(t: torch.Tensor) -> torch.Tensor:
    """``mean((T T^T - I)^2)`` over the rows of ``t``."""
    return ((t @ t.T - torch.eye(t.shape[0], device=t.device)) ** 2).mean()


class CodaPromptPool(nn.Module):
    def __init__(self, dim: int, n_tasks: int, pool_size: int, length: int, layers: Sequence[int], ortho_weight: float) -> None:
        super().__init__()
        self.layers = list(layers)
        self.pool_size, self.length, self.n_tasks = pool_size, length, n_tasks
        self.per_task = pool_size // n_tasks
        self.ortho_weight = ortho_weight
        self.task_count = 0
        if self.per_task * n_tasks > dim:  # the reference's Gram-Schmidt would restart forever
            raise ValueError(f"{self.per_task * n_tasks} prompt keys cannot be orthogonal in width {dim}")
        for layer in self.layers:  # official order: p, k, a created, then each orthogonalised
            tensors = {
                "p": torch.empty(pool_size, length, dim).uniform_(),
                "k": torch.empty(pool_size, dim).uniform_(),
                "a": torch.empty(pool_size, dim).uniform_(),
            }
            for name, value in tensors.items():
                self.register_parameter(f"{name}_{layer}", nn.Parameter(gram_schmidt_rows(value, 0, self.per_task)))

    def tensors(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return getattr(self, f"k_{layer}"), getattr(self, f"a_{layer}"), getattr(self, f"p_{layer}")

    def task_rows(self, task: int) -> tuple[int, int]:
        return task * self.per_task, (task + 1) * self.per_task

    def next_task(self) -> None:
        """Move to the next task: its rows become orthogonal to every earlier row."""
        self.task_count += 1
        start, stop = self.task_rows(self.task_count)
        for layer in self.layers:
            for name in ("k", "a", "p"):
                old = getattr(self, f"{name}_{layer}")
                setattr(self, f"{name}_{layer}", nn.Parameter(gram_schmidt_rows(old, start, stop)))

    def forward(self, query: torch.Tensor, train: bool) -> tuple[dict[int, tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """Per layer the (key, value) prefixes, and the orthogonality penalty."""
        start, stop = self.task_rows(self.task_count)
        prefixes, penalty = {}, query.new_zeros(())
        for layer in self.layers:
            K, A, P = self.tensors(layer)
            if train:
                K, A, P = (torch.cat([x[:start].detach(), x[start:stop]], dim=0) for x in (K, A, P))
            else:
                K, A, P = K[:stop], A[:stop], P[:stop]
            attended = F.normalize(torch.einsum("bd,kd->bkd", query, A), dim=2)
            weights = torch.einsum("bkd,kd->bk", attended, F.normalize(K, dim=1))
            prompt = torch.einsum("bk,kld->bld", weights, P)
            half = self.length // 2
            prefixes[layer] = (prompt[:, :half], prompt[:, half:])
            if train and self.ortho_weight > 0:
                penalty = penalty + self.ortho_weight * (ortho_penalty(K) + ortho_penalty(A) + ortho_penalty(P.flatten(1)))
        return prefixes, penalty


class CodaPromptNet(nn.Module):
    def __init__(self, vit: nn.Module, n_classes: int, n_tasks: int, pool_size: int, length: int,
                 layers: Sequence[int], ortho_weight: float) -> None:
        super().__init__()
        self.prompted = PromptedViT(vit, prefix_blocks=layers)
        self.pool = CodaPromptPool(vit.embed_dim, n_tasks, pool_size, length, layers, ortho_weight)
        self.head = nn.Linear(vit.embed_dim, n_classes)

    def forward(self, x: torch.Tensor, query: torch.Tensor, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        prefixes, penalty = self.pool(query, train)
        cls = self.prompted.forward_tokens(x, prefixes=prefixes)[:, 0]
        return self.head(cls), penalty
