"""DualPrompt's keys; defaults are the official CIFAR-100 config (JAX ``configs/cifar100_dualprompt.py``
and the PyTorch port), with the spec's choices for the suite: one E-prompt per experience, per-sample
key matching at test (no vote) and the correct prefix layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cl_bench.config import MethodConfig, option
from cl_bench.errors import ConfigError
from cl_bench.registry import BACKBONES, STRATEGIES, StrategyEntry

__all__ = ["PREFIX_LAYOUTS", "PROMPT_INITS", "DualPromptConfig"]

#: ``per_sample``: each sample gets its own E-prompt's key and value prefixes (correct); ``batch_mixed``:
#: the PyTorch port's and PILOT's reshape without a permute (a bug, kept for parity).
PREFIX_LAYOUTS = ("per_sample", "batch_mixed")
#: ``pytorch``: randn, then overwritten by U(-1, 1) (the port and PILOT: both draws consume RNG);
#: ``jax``: U(0, 0.01), flax's ``initializers.uniform()`` in the official code.
PROMPT_INITS = ("pytorch", "jax")


@dataclass
class DualPromptConfig(MethodConfig):
    pool_size: int = option(0, "E-prompts in the pool (M); 0: one per experience (M = T). The reference "
                            "silently drops the task mask when M < T, so that is refused", minimum=0)
    g_length: int = option(5, "G-prompt length: key prefixes and as many value prefixes per G-layer", minimum=1)
    e_length: int = option(5, "E-prompt length: key and as many value prefixes per E-layer (20 on ImageNet-R officially)", minimum=1)
    g_layers: tuple[int, ...] = option((0, 1), "blocks with the G-prompt")
    e_layers: tuple[int, ...] = option((2, 3, 4), "blocks with the E-prompt")
    pull_constraint: float = option(1.0, "weight of the pull constraint -lambda * mean cos(query, key of the true task) "
                                    "(official 1.0, PILOT 0.1)", minimum=0.0)
    clip_grad_norm: float = option(1.0, "gradient-norm clipping over the trainable parameters (official 1.0; 0: off, as PILOT)", minimum=0.0)
    prompt_init: str = option("pytorch", "prompt and key init: pytorch = U(-1, 1) (port, PILOT), jax = U(0, 0.01) (official JAX)",
                              choices=PROMPT_INITS)
    prefix_layout: str = option(
        "per_sample", "E-prefix layout: per_sample (correct); batch_mixed = the port's and PILOT's reshape bug, where "
        "each sample gets key or value prefixes chosen for other samples of its batch (parity only)", choices=PREFIX_LAYOUTS)
    batchwise_prompt_eval: bool = option(False, "at evaluation give every image the batch's most frequent E-prompt "
                                         "(official CIFAR and PILOT; a diagnostic here, test batches mix tasks)")
    match_trained_keys_only: bool = option(False, "at evaluation match only the keys of experiences trained so far "
                                           "(the reference lets untrained keys compete)")
    copy_previous_e_prompt: bool = option(True, "a new experience's E-prompt starts as a copy of the previous one (reference)")
    query_cache: bool = option(True, "cache each test image's frozen query feature across evaluations")

    def validate(self, config) -> None:
        depth = BACKBONES[config.run.backbone].depth
        for key in ("g_layers", "e_layers"):
            layers = getattr(self, key)
            if any(not 0 <= layer < depth for layer in layers):
                raise ConfigError(f"key '{key}' must name blocks 0..{depth - 1}; got {layers}", key=key)
        if set(self.g_layers) & set(self.e_layers):
            raise ConfigError(f"keys 'g_layers' {self.g_layers} and 'e_layers' {self.e_layers} must not share a block",
                              key="e_layers")
        n_experiences = len(config.classes_per_experience())
        if 0 < self.pool_size < n_experiences:
            raise ConfigError(f"key 'pool_size' ({self.pool_size}) must be 0 or at least the number of experiences "
                              f"({n_experiences}): each experience trains its own E-prompt", key="pool_size")


STRATEGIES.register(
    "dual_prompt",
    StrategyEntry(
        name="dual_prompt",
        config_cls=DualPromptConfig,
        builder="cl_bench.baselines.dual_prompt.strategy:DualPrompt",
        presets=Path(__file__).with_name("presets.yaml"),
        summary="DualPrompt (ECCV 2022): a shared G-prompt and per-task E-prompts as prefixes, E chosen by key matching",
    ),
)
