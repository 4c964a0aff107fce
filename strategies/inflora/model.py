"""InfLoRA's network and maths (spec ``more_baselines_lora.md`` §2), on the stock timm ViT.

- LoRA on **K and V** of every block (``cl_bench.models.lora``), one (down, up) pair per task.
  The down-projection is *designed* before the task from the Gram matrix of the attention input
  (``h = LN1(x)``, all tokens) projected away from the old tasks' input subspace, and frozen;
  K and V share it. Only the up-projections (zero init) and the task's head train.
- DualGPM: per block an orthonormal basis of the protected input subspace ("remove") or, once that
  fills more than half the width, of the free one ("retain"), grown after each task with an
  energy threshold that rises from ``start`` to ``end`` over the run's tasks.
- One linear head per task; logits of all heads concatenated at test time, one ViT pass.
- After each task its LoRA is folded into K and V (``merge``), so inference has no adapter cost;
  unmerged, every component stays and is summed, as the official code does.

The maths are plain functions on tensors (``energy_threshold``, ``project_gram``,
``design_down``, ``dualgpm_update``) so they can be tested without a strategy.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
from torch import nn

from cl_bench.models.heads import TaskLinearHeads
from cl_bench.models.lora import LoRAQKV, count_trainable, inject_lora

__all__ = [
    "DOWN_SCALE",
    "energy_threshold",
    "project_gram",
    "design_down",
    "dualgpm_update",
    "SubspaceMemory",
    "GramCollector",
    "InfLoRANet",
]

#: The designed rows are orthonormal up to this factor (``down downᵀ = I/3``; official code constant).
DOWN_SCALE = 1.0 / math.sqrt(3.0)


def energy_threshold(task: int, n_tasks: int, start: float, end: float) -> float:
    """``ε_t = start + (end - start) * t / T``: the share of input energy the memory must hold after task t."""
    return start + (end - start) * task / n_tasks


def _svd(matrix: torch.Tensor, full: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Left singular vectors and singular values, float32 on the CPU (as the reference)."""
    u, s, _ = torch.linalg.svd(matrix.detach().to("cpu", torch.float32), full_matrices=full)
    return u, s


def project_gram(gram: torch.Tensor, basis: torch.Tensor | None, retain: bool) -> torch.Tensor:
    """The Gram matrix seen from the free input space: ``C - PC`` when ``basis`` spans the protected
    space, ``PC`` when it spans the free one (``P = UUᵀ``). The projection is applied to C, not to
    the inputs, as the official code does (spec §2.2 "paper vs code")."""
    if basis is None or basis.shape[1] == 0:
        return gram
    projected = basis @ (basis.T @ gram)
    return projected if retain else gram - projected


def design_down(gram: torch.Tensor, basis: torch.Tensor | None, retain: bool, rank: int) -> torch.Tensor:
    """The frozen (rank, D) down-projection: top left singular vectors of the projected Gram
    matrix, as rows, times ``DOWN_SCALE``."""
    u, _ = _svd(project_gram(gram.to(torch.float32), basis, retain))
    return u[:, :rank].T.contiguous() * DOWN_SCALE


def dualgpm_update(basis: torch.Tensor | None, retain: bool, gram: torch.Tensor,
                   threshold: float) -> tuple[torch.Tensor, bool]:
    """One block's DualGPM update after a task (spec §2.3); returns the new basis and its flag.

    Energies are the squared singular values of the Gram matrix C (its squared eigenvalues).
    - no basis yet: keep the first ``max(k, 1)`` directions, k the number whose cumulated energy
      share stays below ``threshold``;
    - protected basis ("remove"): add residual directions until the energy inside the basis reaches
      the threshold;
    - free basis ("retain"): drop directions from it until the free energy is below ``1 - threshold``;
    - a protected basis wider than half the width is swapped for its orthogonal complement.
    """
    gram = gram.detach().to("cpu", torch.float32)
    dim = gram.shape[0]
    u, s = _svd(gram)
    energy = s ** 2
    total = float(energy.sum())
    if basis is None or basis.shape[1] == 0:
        shares = torch.cumsum(energy, 0) / total
        k = int((shares < threshold).sum())
        if k >= dim // 2:
            # The official code stores the kept directions under the "retain" flag here (a latent
            # bug its runs never reach); the free space is their complement.
            full, _ = _svd(gram, full=True)
            basis, retain = full[:, k:], True
        else:
            basis, retain = u[:, : max(k, 1)], False
    elif not retain:
        residual = gram - basis @ (basis.T @ gram)
        u_hat, s_hat = _svd(residual)
        ratios = (s_hat ** 2) / total
        accumulated = (total - float((s_hat ** 2).sum())) / total
        k = 0
        while accumulated < threshold and k < len(ratios):
            accumulated += float(ratios[k])
            k += 1
        if k > 0:
            basis = torch.cat([basis, u_hat[:, :k]], dim=1)[:, :dim]
    else:
        inside = basis @ (basis.T @ gram)
        u_hat, s_hat = _svd(inside)
        ratios = (s_hat ** 2) / total
        free = float((s_hat ** 2).sum()) / total
        k = 0
        while free >= 1.0 - threshold and k < len(ratios):
            free -= float(ratios[k])
            k += 1
        if k > 0:
            taken = u_hat[:, :k]
            rest = basis - taken @ (taken.T @ basis)
            full, _ = _svd(rest, full=True)
            basis = full[:, : basis.shape[1] - k]
    if not retain and basis.shape[1] > dim // 2:
        full, _ = _svd(basis, full=True)
        basis, retain = full[:, basis.shape[1]:], True
    return basis.contiguous(), retain


class SubspaceMemory(nn.Module):
    """One block's DualGPM state as buffers (so checkpoints carry it): ``basis`` (D, m) and ``retain``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("basis", torch.zeros(dim, 0))
        self.register_buffer("retain", torch.tensor(False))

    @property
    def size(self) -> int:
        return self.basis.shape[1]

    def design(self, gram: torch.Tensor, rank: int) -> torch.Tensor:
        return design_down(gram, self.basis.cpu(), bool(self.retain), rank)

    def update_(self, gram: torch.Tensor, threshold: float) -> None:
        basis, retain = dualgpm_update(self.basis.cpu(), bool(self.retain), gram, threshold)
        self.basis = basis.to(self.basis.device)
        self.retain = torch.tensor(retain, device=self.retain.device)

    def protected_projector(self) -> torch.Tensor:
        """``P`` onto the protected (old tasks') input subspace, whichever basis is stored."""
        p = self.basis @ self.basis.T
        return torch.eye(p.shape[0], device=p.device) - p if bool(self.retain) else p

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        incoming = state_dict.get(prefix + "basis")
        if incoming is not None:
            self.basis = torch.empty_like(incoming, device=self.basis.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class GramCollector:
    """Uncentred second moments ``mean over tokens of h hᵀ`` of each wrapper's input, accumulated
    on the CPU in float32 as a running mean, the reference's way (``C ← (C n + Σ h hᵀ)/(n + B N)``)."""

    def __init__(self, wrappers: list[LoRAQKV]) -> None:
        self.wrappers = wrappers
        self.grams = [torch.zeros(w.dim, w.dim) for w in wrappers]
        self.counts = [0] * len(wrappers)
        self._handles = []

    def _hook(self, index: int):
        def accumulate(module, args):
            h = args[0].detach()
            flat = h.reshape(-1, h.shape[-1]).float()
            with torch.autocast(flat.device.type, enabled=False):  # float32 even inside a bf16 run
                total = (flat.T @ flat).cpu()
            n, m = self.counts[index], flat.shape[0]
            self.grams[index] = (self.grams[index] * n + total) / (n + m)
            self.counts[index] = n + m
        return accumulate

    def __enter__(self) -> "GramCollector":
        self._handles = [w.register_forward_pre_hook(self._hook(i)) for i, w in enumerate(self.wrappers)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class InfLoRANet(nn.Module):
    """A frozen timm ViT with InfLoRA's K/V adapters, per-block DualGPM memories and per-task heads.

    Task lifecycle (the strategy drives it): ``add_task`` -> a no-grad pass under ``collect_grams``
    -> ``design_down_`` -> train (``train_logits``) -> a second no-grad pass under
    ``collect_grams`` -> ``update_memory_`` -> ``finish_task_`` (merge).
    """

    def __init__(self, vit: nn.Module, rank: int = 10, merge: bool = True) -> None:
        super().__init__()
        self.vit = vit.requires_grad_(False)
        self.rank = rank
        self.merge = merge
        self.wrappers: list[LoRAQKV] = inject_lora(vit, ("k", "v"), orthogonal_down=False)
        dim = vit.embed_dim
        self.memories = nn.ModuleList(SubspaceMemory(dim) for _ in self.wrappers)
        self.heads = TaskLinearHeads(dim, init="torch")
        #: Tasks whose LoRA was folded into K and V (their pairs are gone).
        self.merged_tasks = 0

    @property
    def device(self) -> torch.device:
        return self.heads.heads[0].weight.device if len(self.heads) else next(self.vit.parameters()).device

    @property
    def current_task(self) -> int:
        return len(self.heads) - 1

    @property
    def n_pairs(self) -> int:
        return len(self.wrappers[0].pairs)

    # -- structure ----------------------------------------------------------------------------
    def add_task(self, n_classes: int) -> int:
        """A head for the task and a fresh pair per block (down replaced by ``design_down_``, up zero)."""
        device = next(self.vit.parameters()).device
        for wrapper in self.wrappers:
            wrapper.add_pair(self.rank)
        self.heads.add(n_classes, device=device)
        self._route()
        return self.current_task

    def set_trainable(self) -> None:
        """The current pair's up-projections (K and V, every block) and the current head; nothing else."""
        self.requires_grad_(False)
        for wrapper in self.wrappers:
            pair = wrapper.pairs[-1]
            pair.k.up.weight.requires_grad_(True)
            pair.v.up.weight.requires_grad_(True)
        self.heads.heads[-1].requires_grad_(True)

    def trainable_parameters_count(self) -> int:
        return count_trainable(self)

    def _route(self) -> None:
        for wrapper in self.wrappers:
            wrapper.groups = [[(i, 1.0, 1.0) for i in range(len(wrapper.pairs))]]

    # -- designing the task's down-projection and the memory ---------------------------------
    @contextlib.contextmanager
    def collect_grams(self) -> Iterator[GramCollector]:
        """Inside: every forward adds its attention inputs to the per-block Gram matrices."""
        with GramCollector(self.wrappers) as collector:
            yield collector

    @torch.no_grad()
    def design_down_(self, grams: list[torch.Tensor]) -> None:
        """Set the current pair's K and V down-projections of every block to the designed matrix."""
        for wrapper, memory, gram in zip(self.wrappers, self.memories, grams):
            down = memory.design(gram, self.rank).to(wrapper.qkv.weight)
            pair = wrapper.pairs[-1]
            pair.k.down.weight.copy_(down)
            pair.v.down.weight.copy_(down)

    def update_memory_(self, grams: list[torch.Tensor], threshold: float) -> None:
        for memory, gram in zip(self.memories, grams):
            memory.update_(gram, threshold)

    @torch.no_grad()
    def finish_task_(self) -> None:
        """Freeze the task's pair; with ``merge``, fold it into K and V and drop it."""
        self.requires_grad_(False)
        if not self.merge:
            return
        for wrapper in self.wrappers:
            for index in range(len(wrapper.pairs)):
                wrapper.fold_(index)
            del wrapper.pairs[:]
        self.merged_tasks = len(self.heads)
        self._route()

    # -- forward passes -----------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """CLS after the final LayerNorm, with every task's LoRA (folded or summed)."""
        self._route()
        return self.vit(x)

    def train_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the current head only (CE on the task's local labels)."""
        return self.heads.heads[-1](self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """All heads concatenated: every seen class, no task identity."""
        return self.heads(self.features(x))
