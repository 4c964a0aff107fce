"""CL-LoRA's network: a frozen stock timm ViT with LoRA on Q and V in every block.

- Blocks ``0..S-1`` (S = half the depth, blocks 0-5 of ViT-B) carry the task-shared adapters:
  one pair per block, down-projection frozen forever, up-projection trained in every task. A
  frozen copy taken after each task (the "teacher" pair) is the KD teacher of the next task.
- Blocks ``S..`` carry task-specific adapters: one pair per *branch*, each with a (3, depth-S)
  block-weight tensor whose Q and V rows scale that branch's LoRA outputs (row K is unused in
  the forward pass but enters the orthogonality loss). With adapter growth every task gets a
  branch of its own; ``task_branch[i]`` is the branch task ``i`` is scored with.
- Inference runs the shared half once per image, then the second half once per branch, several
  branches per batched pass where that is faster (``cl_bench.models.branch_batching``: measured on
  first use, the outputs are the same) (``6 + 6(t+1)`` block passes at task ``t`` instead of the
  reference's ``12(t+1)``).
"""

from __future__ import annotations

import torch
from torch import nn

from cl_bench.models.branch_batching import BranchBatching, shape_key
from cl_bench.models.heads import CosineLinear, PrototypeBank, cosine_logits
from cl_bench.models.vit_parts import cls_feature, embed_tokens, run_blocks
from cl_bench.strategies.cl_lora.lora import QVAdapterPair, QVLoRAQKV

__all__ = ["CLLoRANet", "BLOCK_WEIGHT_INIT", "STUDENT", "TEACHER"]

#: Block weights start U(0.5, 1.5) (reference ``after_task``).
BLOCK_WEIGHT_INIT = (0.5, 1.5)
#: Pair indices inside a shared wrapper.
STUDENT, TEACHER = 0, 1


class CLLoRANet(nn.Module):
    def __init__(self, vit: nn.Module, rank: int, shared_blocks: int, max_branch_sequences: int = 1024,
                 device=None) -> None:
        """``max_branch_sequences``: token sequences per batched pass over branches (0: measured on
        ``device`` on first use, see ``cl_bench.models.branch_batching``)."""
        super().__init__()
        self.vit = vit.requires_grad_(False)
        self.batching = BranchBatching(max_branch_sequences, device)
        self.rank = rank
        self.shared_blocks = shared_blocks
        self.n_specific = len(vit.blocks) - shared_blocks
        for block in vit.blocks:
            block.attn.qkv = QVLoRAQKV(block.attn.qkv)
        for wrapper in self.shared_wrappers:
            wrapper.add_pair(rank)
        self.block_weights = nn.ParameterList()
        self.proxy_head: CosineLinear | None = None
        self.prototypes = PrototypeBank(vit.embed_dim)
        self.task_branch: list[int] = []
        self.task_sizes: list[int] = []
        self.add_branch()

    # -- structure ----------------------------------------------------------------------------
    @property
    def shared_wrappers(self) -> list[QVLoRAQKV]:
        return [block.attn.qkv for block in self.vit.blocks[: self.shared_blocks]]

    @property
    def specific_wrappers(self) -> list[QVLoRAQKV]:
        return [block.attn.qkv for block in self.vit.blocks[self.shared_blocks:]]

    @property
    def n_branches(self) -> int:
        return len(self.block_weights)

    def shared_pairs(self, which: int = STUDENT) -> list[QVAdapterPair]:
        return [wrapper.pairs[which] for wrapper in self.shared_wrappers]

    @property
    def has_teacher(self) -> bool:
        return len(self.shared_wrappers[0].pairs) > TEACHER if self.shared_blocks else False

    def add_branch(self) -> int:
        """Fresh task-specific adapters (orthogonal down, zero up) and block weights."""
        for wrapper in self.specific_wrappers:
            wrapper.add_pair(self.rank)
        weight = torch.randn(3, self.n_specific)  # the reference draws randn, then overwrites it
        nn.init.uniform_(weight, *BLOCK_WEIGHT_INIT)
        self.block_weights.append(nn.Parameter(weight.to(self.prototypes.weight.device)))
        return self.n_branches - 1

    @torch.no_grad()
    def snapshot_teacher(self) -> None:
        """Freeze a copy of the shared adapters as they are now: the next task's KD teacher."""
        for wrapper in self.shared_wrappers:
            if len(wrapper.pairs) == TEACHER:
                wrapper.add_pair(self.rank)
            wrapper.pairs[TEACHER].load_state_dict(wrapper.pairs[STUDENT].state_dict())
            wrapper.pairs[TEACHER].requires_grad_(False)

    def set_trainable(self, branch: int) -> None:
        """Shared up-projections, the branch's adapters and block weights, and the proxy head."""
        self.requires_grad_(False)
        for pair in self.shared_pairs(STUDENT):
            pair.q.up.weight.requires_grad_(True)
            pair.v.up.weight.requires_grad_(True)
        for wrapper in self.specific_wrappers:
            wrapper.pairs[branch].requires_grad_(True)
        self.block_weights[branch].requires_grad_(True)
        if self.proxy_head is not None:
            self.proxy_head.requires_grad_(True)

    def trainable_backbone_parameters(self) -> int:
        """Trainable adapter and block-weight numbers, proxy head excluded (the paper's count)."""
        head = {id(p) for p in self.proxy_head.parameters()} if self.proxy_head is not None else set()
        return sum(p.numel() for p in self.parameters() if p.requires_grad and id(p) not in head)

    @property
    def max_branch_sequences(self) -> int:
        """The sequences per batched pass in use (0 until a measured choice is made)."""
        return self.batching.sequences_per_pass or 0

    @max_branch_sequences.setter
    def max_branch_sequences(self, value: int) -> None:
        self.batching = BranchBatching(value, self.batching.device)

    # -- forward passes -----------------------------------------------------------------------
    def _route_shared(self, which: int) -> None:
        for wrapper in self.shared_wrappers:
            wrapper.route = [(which, 1.0, 1.0)]

    def _route_specific(self, branches: list[int]) -> None:
        for column, wrapper in enumerate(self.specific_wrappers):
            wrapper.route = [(b, self.block_weights[b][0, column], self.block_weights[b][2, column]) for b in branches]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen patch embedding: no graph, and the same for the student and the teacher."""
        return embed_tokens(self.vit, x)

    @property
    def embedding_is_deterministic(self) -> bool:
        """True when one embedding may serve several passes of a batch: no dropout draws in it."""
        vit = self.vit
        return not vit.training or (isinstance(vit.patch_drop, nn.Identity)
                                    and getattr(vit.pos_drop, "p", 0.0) == 0.0)

    def shared_half(self, x: torch.Tensor, which: int = STUDENT, embedded: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens after the shared blocks, with the student or the teacher shared adapters; from
        ``embedded`` (``embed(x)`` of this batch) when given."""
        self._route_shared(which)
        return run_blocks(self.vit, self.embed(x) if embedded is None else embedded, 0, self.shared_blocks)

    def specific_half(self, shared_tokens: torch.Tensor, branches: list[int]) -> torch.Tensor:
        """CLS features of each branch, shape (len(branches), B, D): branches batched together, at
        as many per call as ``self.batching`` chose for this model, device and batch."""
        per_call = self.batching.branches_per_pass(shared_tokens.shape[0], len(branches),
                                                   lambda: shape_key("cl_lora specific block", self.vit, shared_tokens),
                                                   lambda k: self._one_block_pass(shared_tokens, branches[0], k))
        if len(branches) > per_call:
            return torch.cat([self.specific_half(shared_tokens, branches[i: i + per_call])
                              for i in range(0, len(branches), per_call)])
        groups = len(branches)
        self._route_specific(branches)
        tokens = shared_tokens.repeat(groups, 1, 1) if groups > 1 else shared_tokens
        features = cls_feature(self.vit, run_blocks(self.vit, tokens, self.shared_blocks))
        return features.view(groups, shared_tokens.shape[0], -1)

    def _one_block_pass(self, shared_tokens: torch.Tensor, branch: int, groups: int):
        """One specific block over ``groups`` stacked copies of a branch: what batching is timed on."""
        block = self.vit.blocks[self.shared_blocks]

        def run():
            self._route_specific([branch] * groups)
            return block(shared_tokens.repeat(groups, 1, 1) if groups > 1 else shared_tokens)
        return run

    def train_features(self, x: torch.Tensor, branch: int,
                       embedded: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The branch's CLS feature and the shared-half tokens (the KD student reuses them)."""
        shared = self.shared_half(x, embedded=embedded)
        return self.specific_half(shared, [branch])[0], shared

    def shared_feature(self, x: torch.Tensor, which: int = STUDENT, embedded: torch.Tensor | None = None) -> torch.Tensor:
        """CLS after the final LayerNorm applied to the shared half: the KD input (spec §3)."""
        return cls_feature(self.vit, self.shared_half(x, which, embedded))

    def branch_features(self, x: torch.Tensor, branches: list[int]) -> torch.Tensor:
        return self.specific_half(self.shared_half(x), branches)

    def full_pass(self, x: torch.Tensor, branch: int) -> torch.Tensor:
        """One complete 12-block pass with one branch, as the reference runs each branch."""
        return self.branch_features(x, [branch])[0]

    # -- classification -----------------------------------------------------------------------
    def _task_logits(self, features_of_task) -> torch.Tensor:
        logits, start = [], 0
        for task, size in enumerate(self.task_sizes):
            logits.append(cosine_logits(features_of_task(task), self.prototypes.weight[start: start + size]))
            start += size
        return torch.cat(logits, dim=1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Each class scored by its own task's branch against its prototype; no task identity."""
        branches = sorted(set(self.task_branch))
        features = self.branch_features(x, branches)
        index = {b: i for i, b in enumerate(branches)}
        return self._task_logits(lambda task: features[index[self.task_branch[task]]])

    def predict_naive(self, x: torch.Tensor) -> torch.Tensor:
        """The reference inference: one full pass per task (for parity tests and benchmarks)."""
        return self._task_logits(lambda task: self.full_pass(x, self.task_branch[task]))
