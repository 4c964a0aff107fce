"""CL-LoRA's keys; defaults are the reference's fixed constants (``models/cllora.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cl_bench.config import MethodConfig, option
from cl_bench.errors import StrategyArgumentError
from cl_bench.registry import BACKBONES, STRATEGIES, StrategyEntry

__all__ = ["CLLoRAConfig", "check_shared_blocks"]


def check_shared_blocks(shared_blocks: int, depth: int, key: str = "shared_blocks") -> None:
    """-1 (half the depth) or a block count that leaves at least one task-specific block."""
    if shared_blocks >= depth or shared_blocks < -1:
        raise StrategyArgumentError(f"key '{key}' must be -1 or in 0..{depth - 1} for a {depth}-block ViT; got {shared_blocks}", key=key)


@dataclass
class CLLoRAConfig(MethodConfig):
    rank: int = option(8, "LoRA rank of every adapter", minimum=1)
    shared_blocks: int = option(-1, "blocks with task-shared adapters, from the input (-1: half the depth, 0-5 of ViT-B)")
    momentum: float = option(0.9, "SGD momentum", minimum=0.0)
    distillation: bool = option(True, "shared-adapter distillation plugin: KD on the shared half with its own step")
    kd_weight: float = option(5.0, "weight of the KD loss", minimum=0.0)
    kd_temperature: float = option(2.0, "KD temperature (soft-target CE, no T^2 factor)", minimum=1e-6)
    gradient_reassignment: bool = option(True, "rescale the KD gradient of shared up-projections by the old row norms")
    kd_reuse_shared_forward: bool = option(
        True, "take the KD student from the main forward's shared half (false: a separate pass, as the reference)"
    )
    adapter_growth: bool = option(True, "adapter-growth plugin: fresh task-specific adapters and block weights per task")
    orth_weight: float = option(1e-4, "weight of the block-weight orthogonality loss", minimum=0.0)
    max_branch_sequences: int = option(
        0, "at inference, most token sequences per batched pass over task branches (0: auto, measured on "
        "first use for this model, device and batch, and cached)", minimum=0, semantic=False
    )

    def validate(self, config) -> None:
        """Early, from the registered backbone (the strategy checks the model it is given again)."""
        check_shared_blocks(self.shared_blocks, BACKBONES[config.run.backbone].depth)


STRATEGIES.register(
    "cl_lora",
    StrategyEntry(
        name="cl_lora",
        config_cls=CLLoRAConfig,
        builder="cl_bench.strategies.cl_lora.strategy:CLLoRA",
        presets=Path(__file__).with_name("presets.yaml"),
        summary="CL-LoRA (CVPR 2025): shared LoRA with KD + gradient reassignment, task-specific LoRA with block weights",
    ),
)
