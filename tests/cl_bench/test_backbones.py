"""Backbones: pinned tags, local files with their sha256, the committed suite ViT, offline errors."""

import pytest
import torch

from cl_bench.backbones import MINI_VIT_WEIGHTS, build_backbone, file_sha256
from cl_bench.errors import WeightsUnavailableError
from cl_bench.models.vit_parts import cls_feature, embed_tokens, run_blocks
from cl_bench.registry import BACKBONES
from helpers import tiny_config


def test_committed_weights_match_their_pinned_sha256():
    entry = BACKBONES["vit_mini_patch4_28.fmnist_letters"]
    assert entry.weights_file == MINI_VIT_WEIGHTS and MINI_VIT_WEIGHTS.is_file()
    assert file_sha256(MINI_VIT_WEIGHTS) == entry.sha256


def test_committed_weights_load_into_the_registered_backbone():
    backbone = build_backbone(tiny_config("simple_cil", pretrained=True))
    assert backbone.info.sha256 == BACKBONES["vit_mini_patch4_28.fmnist_letters"].sha256
    assert backbone.info.source.startswith("repository")
    from safetensors.torch import load_file

    saved = load_file(str(MINI_VIT_WEIGHTS))
    state = backbone.vit.state_dict()
    assert set(saved) == set(state)
    assert all(torch.equal(saved[k].float(), state[k]) for k in saved)
    assert not any(p.requires_grad for p in backbone.vit.parameters())
    x = torch.rand(2, 3, 28, 28)
    assert backbone.vit(x).shape == (2, 128)


def test_pieces_compose_to_the_stock_forward():
    backbone = build_backbone(tiny_config("simple_cil", pretrained=True))
    vit = backbone.vit.eval()
    x = torch.rand(3, 3, 28, 28)
    assert torch.allclose(cls_feature(vit, run_blocks(vit, embed_tokens(vit, x))), vit(x), atol=1e-6)


def test_local_weights_file_and_its_sha256_are_recorded(tmp_path):
    from safetensors.torch import save_file

    random = build_backbone(tiny_config("simple_cil", pretrained=False)).vit
    path = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in random.state_dict().items()}, str(path))
    loaded = build_backbone(tiny_config("simple_cil", pretrained=True, pretrained_file=str(path)))
    assert loaded.info.sha256 == file_sha256(path) and loaded.info.source == f"file: {path}"
    assert all(torch.equal(a, b) for a, b in zip(random.state_dict().values(), loaded.vit.state_dict().values()))


def test_hub_weights_offline_give_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = tiny_config("simple_cil", "split_cifar100", pretrained=True)
    with pytest.raises(WeightsUnavailableError) as info:
        build_backbone(config)
    message = str(info.value)
    assert "vit_base_patch16_224.augreg_in21k" in message and "--pretrained_file" in message
    assert "\n" not in message


def test_the_vit_b_architecture_is_the_papers():
    vit = build_backbone(tiny_config("simple_cil", "split_cifar100", pretrained=False)).vit
    assert len(vit.blocks) == 12 and vit.embed_dim == 768 and vit.blocks[0].attn.num_heads == 12
    assert vit.blocks[0].attn.qkv.bias is not None and vit.norm.eps == 1e-6
    assert sum(p.numel() for p in vit.parameters()) == 85_798_656
