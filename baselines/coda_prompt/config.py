"""CODA-Prompt's keys; defaults are the official ``configs/*_prompt.yaml`` (prompt_param 100 8 0.0)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cl_bench.config import MethodConfig, option
from cl_bench.errors import ConfigError
from cl_bench.registry import BACKBONES, STRATEGIES, StrategyEntry

__all__ = ["CodaPromptConfig"]


@dataclass
class CodaPromptConfig(MethodConfig):
    pool_size: int = option(100, "prompt components per layer (M), split evenly across experiences", minimum=1)
    prompt_length: int = option(8, "prefix length (Lp): half keys, half values", minimum=2)
    prompt_layers: tuple[int, ...] = option((0, 1, 2, 3, 4), "blocks with prefixes")
    ortho_weight: float = option(0.0, "orthogonality penalty weight (mu; 0 in the official configs, 0.1 in the paper)", minimum=0.0)
    query_cache: bool = option(True, "cache each test image's frozen query feature across evaluations")

    def validate(self, config) -> None:
        depth = BACKBONES[config.run.backbone].depth
        if any(not 0 <= layer < depth for layer in self.prompt_layers):
            raise ConfigError(f"key 'prompt_layers' must name blocks 0..{depth - 1}; got {self.prompt_layers}", key="prompt_layers")
        n_experiences = len(config.classes_per_experience())
        if self.pool_size < n_experiences:
            raise ConfigError(f"key 'pool_size' ({self.pool_size}) must be at least the number of experiences ({n_experiences})", key="pool_size")
        width = BACKBONES[config.run.backbone].embed_dim
        used_rows = self.pool_size // n_experiences * n_experiences
        if used_rows > width:
            raise ConfigError(f"key 'pool_size' ({self.pool_size}) gives {used_rows} keys, more than the backbone's width "
                              f"{width} can hold orthogonal (Gram-Schmidt); use at most {width}", key="pool_size")
        if self.prompt_length % 2:
            raise ConfigError(f"key 'prompt_length' must be even (half keys, half values); got {self.prompt_length}", key="prompt_length")


STRATEGIES.register(
    "coda_prompt",
    StrategyEntry(
        name="coda_prompt",
        config_cls=CodaPromptConfig,
        builder="baselines.coda_prompt.strategy:CodaPrompt",
        presets=Path(__file__).with_name("presets.yaml"),
        summary="CODA-Prompt (CVPR 2023): attention-weighted prompt components as prefixes in blocks 0-4",
    ),
)
