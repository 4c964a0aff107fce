"""L2P's keys; defaults are the official CIFAR-100 config (``JH-LEE-KR/l2p-pytorch``, PILOT ``exps/l2p.json``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cl_bench.config import MethodConfig, option
from cl_bench.errors import StrategyArgumentError
from cl_bench.registry import STRATEGIES, StrategyEntry

__all__ = ["L2PConfig", "check_top_k"]


def check_top_k(top_k: int, pool_size: int) -> None:
    if top_k > pool_size:
        raise StrategyArgumentError(f"key 'top_k' ({top_k}) cannot exceed pool_size ({pool_size})", key="top_k")


@dataclass
class L2PConfig(MethodConfig):
    pool_size: int = option(10, "prompts in the pool (M)", minimum=1)
    prompt_length: int = option(5, "tokens per prompt (Lp)", minimum=1)
    top_k: int = option(5, "prompts selected per image (N)", minimum=1)
    pull_constraint: float = option(0.1, "weight of the surrogate key-matching term (lambda)", minimum=0.0)
    batchwise_prompt: bool = option(True, "majority vote of the batch's top-k prompts in training (reference)")
    batchwise_prompt_eval: bool = option(
        True, "the same vote at evaluation (reference); test batches mix all seen tasks here, so it cannot read task identity"
    )
    clip_grad_norm: float = option(0.0, "gradient-norm clipping (0: off, as PILOT; the official code clips at 1.0)", minimum=0.0)
    query_cache: bool = option(True, "cache each test image's frozen query feature across evaluations")

    def validate(self, config) -> None:
        check_top_k(self.top_k, self.pool_size)


STRATEGIES.register(
    "l2p",
    StrategyEntry(
        name="l2p",
        config_cls=L2PConfig,
        builder="cl_bench.baselines.l2p.strategy:L2P",
        presets=Path(__file__).with_name("presets.yaml"),
        summary="L2P (CVPR 2022): a prompt pool with keys, top-k prompts chosen by a frozen-ViT query",
    ),
)
