"""DualPrompt as an Avalanche strategy: two passes per image (frozen query, prompted), the true
experience's E-prompt forced in training (copied from the previous one when the experience starts),
every class but the current experience's masked, loss CE - lambda * cos(query, key); Adam rebuilt
per experience with a constant learning rate; at evaluation the top-1 key per image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from avalanche.training.plugins.evaluation import default_evaluator

from cl_bench.baselines.dual_prompt.config import PREFIX_LAYOUTS, PROMPT_INITS, DualPromptConfig
from cl_bench.baselines.dual_prompt.model import DualPromptNet, keep_columns, pull_constraint_similarity, select_e_prompt
from cl_bench.baselines.prompt_template import PromptTemplate
from cl_bench.errors import StrategyArgumentError
from cl_bench.training.template import prepare_vit

__all__ = ["DualPrompt"]


class DualPrompt(PromptTemplate):
    """DualPrompt on a timm ViT (or a backbone tag), built like Avalanche's strategies:

        DualPrompt(model=vit, num_classes=100, n_experiences=20, train_mb_size=24, train_epochs=5, device="cuda")

    ``num_classes`` is the number of classes of the whole stream (one head over all of them, as the
    reference); the E-prompt pool has ``pool_size`` entries, or one per experience (``pool_size=0``
    and ``n_experiences``). Defaults are the official CIFAR-100 recipe.
    """

    config_cls = DualPromptConfig

    def __init__(self, *, model="vit_base_patch16_224.augreg_in21k", num_classes: int, n_experiences: int = 0,
                 pool_size: int = 0, g_length: int = 5, e_length: int = 5, g_layers=(0, 1), e_layers=(2, 3, 4),
                 pull_constraint: float = 1.0, clip_grad_norm: float = 1.0, prompt_init: str = "pytorch",
                 prefix_layout: str = "per_sample", batchwise_prompt_eval: bool = False,
                 match_trained_keys_only: bool = False, copy_previous_e_prompt: bool = True, query_cache: bool = True,
                 lr: float = 0.0028125, weight_decay: float = 0.0, amp: str = "none", copy_model: bool = True,
                 train_mb_size: int = 24, train_epochs: int = 5, eval_mb_size: int = 24, device=None, plugins=None,
                 evaluator=default_evaluator, eval_every: int = -1, **base_kwargs) -> None:
        vit = prepare_vit(model, copy_model=copy_model)
        depth = len(vit.blocks)
        g_layers, e_layers = tuple(g_layers), tuple(e_layers)
        for key, layers in (("g_layers", g_layers), ("e_layers", e_layers)):
            if any(not 0 <= layer < depth for layer in layers):
                raise StrategyArgumentError(f"argument '{key}' must name blocks 0..{depth - 1} of this ViT; got {layers}", key=key)
        if set(g_layers) & set(e_layers):
            raise StrategyArgumentError(f"arguments 'g_layers' {g_layers} and 'e_layers' {e_layers} must not share a block",
                                        key="e_layers")
        for key, value, allowed in (("prefix_layout", prefix_layout, PREFIX_LAYOUTS), ("prompt_init", prompt_init, PROMPT_INITS)):
            if value not in allowed:
                raise StrategyArgumentError(f"argument '{key}' must be one of {', '.join(allowed)}; got {value!r}", key=key)
        pool = pool_size or n_experiences
        if pool < 1:
            raise StrategyArgumentError("argument 'pool_size' is 0 (one E-prompt per experience) but 'n_experiences' is not "
                                        "given; pass either", key="pool_size")
        net = DualPromptNet(vit, num_classes, pool, g_layers, e_layers, g_length, e_length, prefix_layout, prompt_init)
        self.pull_constraint, self.clip_grad_norm = pull_constraint, clip_grad_norm
        self.batchwise_prompt_eval, self.match_trained_keys_only = batchwise_prompt_eval, match_trained_keys_only
        self.copy_previous_e_prompt = copy_previous_e_prompt
        self.key_similarity = torch.zeros(())
        self.eval_prompt_usage = torch.zeros(pool, dtype=torch.long)
        super().__init__(model=net, backbone=vit, num_classes=num_classes, query_cache=query_cache, lr=lr,
                         weight_decay=weight_decay, amp=amp, train_mb_size=train_mb_size, train_epochs=train_epochs,
                         eval_mb_size=eval_mb_size, device=device, plugins=plugins, evaluator=evaluator,
                         eval_every=eval_every, **base_kwargs)

    @classmethod
    def stream_arguments(cls, *, n_classes: int, n_experiences: int) -> dict:
        return {"num_classes": n_classes, "n_experiences": n_experiences}

    def adapt_model(self) -> None:
        t = self.task_index
        if t >= self.model.pool_size:
            raise StrategyArgumentError(
                f"experience {self.experience_index} is the {t + 1}th trained, but the E-prompt pool holds {self.model.pool_size}; "
                "give 'pool_size' >= the number of experiences (or 0 with 'n_experiences')", key="pool_size")
        if t >= 1 and self.copy_previous_e_prompt:
            self.model.copy_e_prompt(t - 1, t)

    def forward(self) -> torch.Tensor:
        model = self.model
        q = self.query()
        if self.is_training:
            idx = select_e_prompt(q, model.keys, task=self.task_index)
            self.key_similarity = pull_constraint_similarity(q, model.keys, idx)
            return keep_columns(model(self.mb_x, idx), slice(self.known_classes, self.seen_classes))
        n_trained = self.task_index + 1 if self.match_trained_keys_only else None
        idx = select_e_prompt(q, model.keys, n_trained=n_trained, batchwise=self.batchwise_prompt_eval)
        self.eval_prompt_usage += torch.bincount(idx.flatten().cpu(), minlength=model.pool_size)
        return self.eval_logits(model(self.mb_x, idx))

    def criterion(self) -> torch.Tensor:
        if not self.is_training:
            return self._make_empty_loss()
        return F.cross_entropy(self.mb_output, self.mb_columns) - self.pull_constraint * self.key_similarity

    def _after_backward(self, **kwargs) -> None:
        if self.clip_grad_norm > 0:  # over the parameters with gradients, as the PyTorch port
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.grad is not None], self.clip_grad_norm)
        super()._after_backward(**kwargs)

    def _before_eval_exp(self, **kwargs) -> None:
        self.eval_prompt_usage.zero_()
        super()._before_eval_exp(**kwargs)

    def experience_report(self) -> dict:
        """Which E-prompt the test images of the last evaluation chose (entry t is experience t's)."""
        return {"eval_prompt_usage": self.eval_prompt_usage.tolist()}
