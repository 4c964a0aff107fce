"""The suite's small ViT, registered with timm like its own models.

Same ``VisionTransformer`` class and block structure as ViT-B/16 (pre-LN blocks, CLS token, qkv
bias, MLP ratio 4, LayerNorm eps 1e-6), scaled to 28x28 grey images: width 128, 6 blocks, 4 heads,
4x4 patches (49 tokens + CLS). Its ``fmnist_letters`` tag loads weights that ship with the repository.
"""

from __future__ import annotations

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from cl_bench.weights import MINI_VIT_WEIGHTS

__all__ = ["MINI_VIT_ARCH"]

MINI_VIT_ARCH = dict(
    img_size=28, patch_size=4, embed_dim=128, depth=6, num_heads=4, mlp_ratio=4.0, qkv_bias=True,
)

default_cfgs = generate_default_cfgs({
    "vit_mini_patch4_28.fmnist_letters": {
        "file": str(MINI_VIT_WEIGHTS),
        "num_classes": 0,
        "input_size": (3, 28, 28),
        "mean": (0.0, 0.0, 0.0),
        "std": (1.0, 1.0, 1.0),
        "crop_pct": 1.0,
        "license": "mit",
        "notes": ("pretrained by cl-bench sweeps/pretrain.py on Fashion-MNIST and letter glyphs",),
    },
})


@register_model
def vit_mini_patch4_28(pretrained: bool = False, **kwargs) -> VisionTransformer:
    return build_model_with_cfg(
        VisionTransformer, "vit_mini_patch4_28", pretrained,
        pretrained_filter_fn=checkpoint_filter_fn, **dict(MINI_VIT_ARCH, **kwargs),
    )
