"""Pinned backbones: timm tags (never bare names), local files, and the suite's own small ViT.

Weights resolve in this order: ``--pretrained_file``, the repository's own file (suite-made
backbones), the Hugging Face cache, a download. Every run records the tag and the sha256 of the
file it loaded; an offline machine without the weights gets one line naming the tag and the fix.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cl_bench.errors import WeightsUnavailableError
from cl_bench.registry import BACKBONES, BackboneEntry

__all__ = ["BackboneInfo", "Backbone", "resolve_weights", "build_backbone", "file_sha256", "MINI_VIT_WEIGHTS"]

# Bounded network waits for the Hugging Face hub: an offline run must fail fast, never hang.
os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MINI_VIT_WEIGHTS = WEIGHTS_DIR / "vit_mini_patch4_28.fmnist_letters.safetensors"

for _tag, _summary in (
    ("vit_base_patch16_224.augreg_in21k", "ViT-B/16 AugReg IN-21k (CL-LoRA CIFAR-100; PILOT/EASE 'IN21K')"),
    ("vit_base_patch16_224.augreg_in21k_ft_in1k", "ViT-B/16 AugReg IN-21k fine-tuned on IN-1k (CL-LoRA ImageNet-R; PILOT 'IN1K')"),
    ("vit_base_patch16_224.orig_in21k", "ViT-B/16 of the original ViT paper, IN-21k (official L2P)"),
    ("vit_base_patch16_224.augreg2_in21k_ft_in1k", "ViT-B/16 AugReg2 IN-21k fine-tuned on IN-1k (official SD-LoRA: timm's bare name)"),
):
    BACKBONES.register(_tag, BackboneEntry(name=_tag, timm_name=_tag, input_size=224, summary=_summary))

BACKBONES.register(
    "vit_mini_patch4_28.fmnist_letters",
    BackboneEntry(
        name="vit_mini_patch4_28.fmnist_letters",
        timm_name="vit_mini_patch4_28",
        weights_file=MINI_VIT_WEIGHTS,
        sha256="be874901f4d6d373669b848abac9f3b3df92a1116bd5f84be5ed7b559c646873",
        input_size=28,
        depth=6,
        embed_dim=128,
        summary="the suite's 6-block ViT (width 128, patch 4, 28 px), pretrained on Fashion-MNIST and letter glyphs by sweeps/pretrain.py",
    ),
)


@dataclass(frozen=True)
class BackboneInfo:
    """What a run records about its backbone."""

    tag: str
    pretrained: bool
    sha256: str | None
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {"tag": self.tag, "pretrained": self.pretrained, "sha256": self.sha256, "source": self.source}


@dataclass
class Backbone:
    vit: Any  # timm VisionTransformer, frozen, CLS token after the final norm as output
    info: BackboneInfo

    def __post_init__(self) -> None:
        # The pretrained tensors, taken before any strategy injects adapters or prompts into the
        # ViT: checkpoints store everything else (the backbone is re-created from its tag).
        self.tensor_ids = frozenset(id(t) for t in [*self.vit.parameters(), *self.vit.buffers()])

    @property
    def embed_dim(self) -> int:
        return self.vit.embed_dim

    @property
    def depth(self) -> int:
        return len(self.vit.blocks)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _hub_weights(entry: BackboneEntry) -> tuple[Path, str]:
    """The hub file of a timm tag, from the cache or downloaded with bounded timeouts."""
    import timm
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(entry.timm_name)
    repo = cfg.hf_hub_id if cfg is not None else None
    if not repo:
        raise WeightsUnavailableError(f"timm has no hub weights for '{entry.name}'; pass --pretrained_file=PATH", key="backbone")
    filename = cfg.hf_hub_filename or "model.safetensors"
    cached = try_to_load_from_cache(repo, filename)
    if isinstance(cached, str):
        return Path(cached), "hub cache"
    try:
        return Path(hf_hub_download(repo, filename)), "hub download"
    except Exception as error:
        reason = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}" if str(error) else type(error).__name__
        raise WeightsUnavailableError(
            f"pretrained weights for '{entry.name}' are not in the Hugging Face cache and could not be downloaded ({reason}); "
            f"on a machine with network, download https://huggingface.co/{repo}/resolve/main/{filename} "
            "and pass --pretrained_file=PATH (or copy the hub cache), or run with --pretrained=false",
            key="backbone",
        ) from None


def resolve_weights(entry: BackboneEntry, run_config) -> tuple[Path | None, str]:
    """The weights file to load and where it came from; ``(None, 'random init')`` without pretraining."""
    if not run_config.pretrained:
        return None, "random init"
    if run_config.pretrained_file:
        return Path(run_config.pretrained_file).expanduser(), "file"
    if entry.weights_file is not None:
        if not entry.weights_file.is_file():
            raise WeightsUnavailableError(
                f"the weights of '{entry.name}' are missing at {entry.weights_file}; restore them from git "
                "or rebuild them with `python sweeps/pretrain.py`",
                key="backbone",
            )
        return entry.weights_file, "repository"
    return _hub_weights(entry)


def build_backbone(config) -> Backbone:
    """A frozen timm ViT whose output is the CLS token after the final LayerNorm."""
    import timm

    import cl_bench.models.vit_mini  # noqa: F401  (registers the suite's own ViT with timm)

    entry = BACKBONES[config.run.backbone]
    path, source = resolve_weights(entry, config.run)
    kwargs = dict(entry.timm_kwargs, num_classes=0, global_pool="token")
    sha256 = None
    if path is None:
        vit = timm.create_model(entry.timm_name, pretrained=False, **kwargs)
    else:
        sha256 = file_sha256(path)
        if entry.sha256 and source == "repository" and sha256 != entry.sha256:
            raise WeightsUnavailableError(
                f"{path} has sha256 {sha256[:12]}..., not the pinned {entry.sha256[:12]}...; restore it from git",
                key="backbone",
            )
        if path.suffix == ".npz":  # the original Google checkpoints
            vit = timm.create_model(entry.timm_name, pretrained=False, **kwargs)
            vit.load_pretrained(str(path))
        else:
            vit = timm.create_model(
                entry.timm_name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs
            )
    vit.requires_grad_(False)
    return Backbone(vit=vit, info=BackboneInfo(tag=entry.name, pretrained=path is not None, sha256=sha256, source=source if path is None else f"{source}: {path}"))
