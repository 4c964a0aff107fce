"""CODA-Prompt's keys; defaults are the official ``configs/*_prompt.yaml`` (prompt_param 100 8 0.0)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cl_bench.config import MethodConfig, option
from cl_bench.errors import StrategyArgumentError
from cl_bench.registry import BACKBONES, STRATEGIES, StrategyEntry

__all__ = ["CodaPromptConfig", "check_coda_arguments"]


def check_coda_arguments(*, pool_size: int, prompt_length: int, prompt_layers, depth: int, width: int,
                         n_experiences: int) -> None:
    """What the component pool needs of the ViT and the stream (one error naming the key)."""
    if any(not 0 <= layer < depth for layer in prompt_layers):
        raise StrategyArgumentError(f"key 'prompt_layers' must name blocks 0..{depth - 1}; got {tuple(prompt_layers)}", key="prompt_layers")
    if pool_size < n_experiences:
        raise StrategyArgumentError(f"key 'pool_size' ({pool_size}) must be at least the number of experiences ({n_experiences})", key="pool_size")
    used_rows = pool_size // n_experiences * n_experiences
    if used_rows > width:
        raise StrategyArgumentError(f"key 'pool_size' ({pool_size}) gives {used_rows} keys, more than the ViT's width {width} "
                                    f"can hold orthogonal (Gram-Schmidt); use at most {width}", key="pool_size")
    if prompt_length % 2:
        raise StrategyArgumentError(f"key 'prompt_length' must be even (half keys, half values); got {prompt_length}", key="prompt_length")


@dataclass
class CodaPromptConfig(MethodConfig):
    pool_size: int = option(100, "prompt components per layer (M), split evenly across experiences", minimum=1)
    prompt_length: int = option(8, "prefix length (Lp): half keys, half values", minimum=2)
    prompt_layers: tuple[int, ...] = option((0, 1, 2, 3, 4), "blocks with prefixes")
    ortho_weight: float = option(0.0, "orthogonality penalty weight (mu; 0 in the official configs, 0.1 in the paper)", minimum=0.0)
    query_cache: bool = option(True, "cache each test image's frozen query feature across evaluations")

    def validate(self, config) -> None:
        """Early, from the registered backbone (the strategy checks the model it is given again)."""
        entry = BACKBONES[config.run.backbone]
        check_coda_arguments(pool_size=self.pool_size, prompt_length=self.prompt_length, prompt_layers=self.prompt_layers,
                             depth=entry.depth, width=entry.embed_dim, n_experiences=len(config.classes_per_experience()))


STRATEGIES.register(
    "coda_prompt",
    StrategyEntry(
        name="coda_prompt",
        config_cls=CodaPromptConfig,
        builder="cl_bench.baselines.coda_prompt.strategy:CodaPrompt",
        presets=Path(__file__).with_name("presets.yaml"),
        summary="CODA-Prompt (CVPR 2023): attention-weighted prompt components as prefixes in blocks 0-4",
    ),
)
