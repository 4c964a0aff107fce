"""CL-LoRA as an Avalanche ``SupervisedTemplate`` (spec: ``../shared/specs/cl_lora.md``).

Per experience: a fresh cosine head over the experience's classes only, a new SGD optimizer and
cosine schedule over the trainable tensors, training, then class-mean prototypes of the
experience's training images (test transform) with the experience's own branch.

The update of one iteration (spec §6.1), autograd-safe:
  1. the CE (+ orthogonality) gradients are taken with ``torch.autograd.grad`` and kept;
  2. ``SharedAdapterDistillation.before_update`` takes its KD step (from the second experience);
  3. the kept gradients are written to ``.grad`` and the optimizer steps again.
The reference's second ``backward()`` reads weights already changed by step 1 (an O(lr*grad)
difference) and raises on current PyTorch; this is the deviation the spec names.
"""

from __future__ import annotations

import torch

from avalanche.training.plugins.evaluation import default_evaluator

from cl_bench.models.heads import CosineLinear
from cl_bench.strategies.cl_lora.config import CLLoRAConfig, check_shared_blocks
from cl_bench.training.template import CLBenchTemplate, prepare_vit
from cl_bench.strategies.cl_lora.model import CLLoRANet
from cl_bench.strategies.cl_lora.plugins import AdapterGrowth, SharedAdapterDistillation

__all__ = ["CLLoRA"]


class CLLoRA(CLBenchTemplate):
    """CL-LoRA on a timm ViT (or a backbone tag), built like Avalanche's own strategies:

        CLLoRA(model=vit, train_mb_size=64, train_epochs=30, eval_mb_size=128, device="cuda",
               evaluator=EvaluationPlugin(accuracy_metrics(stream=True)))

    Defaults are the reference's CIFAR-100 B5-5-20 recipe. ``distillation`` and ``adapter_growth``
    switch the two plugins; ``copy_model=False`` hands the ViT over instead of copying it.
    """

    config_cls = CLLoRAConfig

    def __init__(self, *, model="vit_base_patch16_224.augreg_in21k", rank: int = 8, shared_blocks: int = -1,
                 lr: float = 0.03, weight_decay: float = 1e-4, momentum: float = 0.9,
                 distillation: bool = True, kd_weight: float = 5.0, kd_temperature: float = 2.0,
                 gradient_reassignment: bool = True, kd_reuse_shared_forward: bool = True,
                 adapter_growth: bool = True, orth_weight: float = 1e-4, max_branch_sequences: int = 0,
                 amp: str = "none", copy_model: bool = True, train_mb_size: int = 64, train_epochs: int = 30,
                 eval_mb_size: int = 128, device=None, plugins=None, evaluator=default_evaluator,
                 eval_every: int = -1, **base_kwargs) -> None:
        vit = prepare_vit(model, copy_model=copy_model)
        depth = len(vit.blocks)
        check_shared_blocks(shared_blocks, depth)
        shared = shared_blocks if shared_blocks >= 0 else depth // 2
        self.momentum = momentum
        net = CLLoRANet(vit, rank=rank, shared_blocks=shared, max_branch_sequences=max_branch_sequences,
                        device=device or "cpu")
        self.distillation = SharedAdapterDistillation(
            weight=kd_weight, temperature=kd_temperature,
            reassign=gradient_reassignment, reuse_shared_forward=kd_reuse_shared_forward,
        ) if distillation else None
        self.growth = AdapterGrowth(orth_weight=orth_weight) if adapter_growth else None
        own = [p for p in (self.growth, self.distillation) if p is not None]
        self.shared_tokens: torch.Tensor | None = None
        self.embedded_tokens: torch.Tensor | None = None
        self._pending_grads: list[tuple[torch.nn.Parameter, torch.Tensor | None]] = []
        super().__init__(model=net, backbone=vit, lr=lr, weight_decay=weight_decay, amp=amp,
                         train_mb_size=train_mb_size, train_epochs=train_epochs, eval_mb_size=eval_mb_size,
                         device=device, plugins=[*own, *(plugins or [])], evaluator=evaluator,
                         eval_every=eval_every, **base_kwargs)

    @property
    def current_branch(self) -> int:
        return self.model.task_branch[-1]

    # -- per experience -----------------------------------------------------------------------
    def adapt_model(self) -> None:
        model = self.model
        model.task_branch.append(model.n_branches - 1)
        n_new = self.seen_classes - self.known_classes
        model.proxy_head = CosineLinear(model.vit.embed_dim, n_new).to(self.device)
        model.set_trainable(self.current_branch)

    def build_optimizer(self, params):
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def build_scheduler(self, optimizer):
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(self.train_epochs, 1), eta_min=0.0)

    def _after_training_exp(self, **kwargs) -> None:
        model = self.model
        branch = self.current_branch
        model.prototypes.add(self.class_means(lambda x: model.full_pass(x, branch)))
        model.task_sizes.append(self.seen_classes - self.known_classes)
        model.requires_grad_(False)
        super()._after_training_exp(**kwargs)
        model.proxy_head = None  # the training head is never used again (the reference keeps it unused)

    # -- iteration ----------------------------------------------------------------------------
    def forward(self) -> torch.Tensor:
        if not self.is_training:
            return self.model.predict(self.mb_x)
        self.embedded_tokens = self.model.embed(self.mb_x)  # the KD teacher starts from it too
        features, self.shared_tokens = self.model.train_features(self.mb_x, self.current_branch, self.embedded_tokens)
        return self.model.proxy_head(features)

    def backward(self) -> None:
        """Keep the CE (+ orth) gradients; the KD step may reuse this graph's shared half."""
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        keep_graph = self.distillation is not None and self.distillation.reuse_shared_forward \
            and self.distillation.active(self)
        grads = torch.autograd.grad(self.loss, params, retain_graph=keep_graph, allow_unused=True)
        self._pending_grads = list(zip(params, grads))

    def optimizer_step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        for param, grad in self._pending_grads:
            param.grad = grad
        self._pending_grads = []
        self.optimizer.step()

    def _after_training_iteration(self, **kwargs) -> None:
        # The CE gradients were taken with the graph retained for the KD step, which frees only the
        # shared half: drop every reference to the rest before the next batch is loaded.
        self.shared_tokens = self.embedded_tokens = None
        self.mb_output = self.mb_output.detach()
        self.loss = self.loss.detach()
        super()._after_training_iteration(**kwargs)

    def head_parameters(self):
        return list(self.model.proxy_head.parameters()) if self.model.proxy_head is not None else []

    def experience_report(self) -> dict:
        """The branch batching in use at inference (measured or cached on first use), for the record."""
        return {"branch_batching": self.model.batching.report()}

    # -- checkpoints --------------------------------------------------------------------------
    def extra_state(self) -> dict:
        model = self.model
        return {"n_branches": model.n_branches, "has_teacher": model.has_teacher,
                "task_branch": list(model.task_branch), "task_sizes": list(model.task_sizes)}

    def restore_structure(self, extra: dict) -> None:
        model = self.model
        while model.n_branches < extra["n_branches"]:
            model.add_branch()
        if extra["has_teacher"] and not model.has_teacher:
            model.snapshot_teacher()
        model.task_branch[:] = extra["task_branch"]
        model.task_sizes[:] = extra["task_sizes"]
        model.requires_grad_(False)
