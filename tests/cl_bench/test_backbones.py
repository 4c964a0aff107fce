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


def test_importing_the_suite_changes_no_process_state():
    """No HF_HUB_* variable and no socket timeout is set by importing; both are scoped to the call
    that downloads."""
    import subprocess
    import sys

    from helpers import REPO

    code = (
        "import os, socket\n"
        "import torch, torchvision  # what the libraries themselves set is not ours to judge\n"
        "before = dict(os.environ)\n"
        "from cl_bench import catalog, backbones\n"
        "import cl_bench.benches.images\n"
        "changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))\n"
        "print(changed, socket.getdefaulttimeout())\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("HF_HUB_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "[] None"


def test_download_timeouts_are_restored_after_the_call(monkeypatch, tmp_path):
    import socket

    from huggingface_hub import constants

    from cl_bench.backbones import HUB_DOWNLOAD_TIMEOUT_S, bounded_hub_download
    from cl_bench.benches.images import bounded_socket_timeout, load_cifar100
    from cl_bench.errors import DataMissingError

    monkeypatch.delenv("HF_HUB_DOWNLOAD_TIMEOUT", raising=False)
    before = constants.HF_HUB_DOWNLOAD_TIMEOUT
    with bounded_hub_download():
        assert constants.HF_HUB_DOWNLOAD_TIMEOUT == HUB_DOWNLOAD_TIMEOUT_S
    assert constants.HF_HUB_DOWNLOAD_TIMEOUT == before
    with bounded_socket_timeout(7.0):
        assert socket.getdefaulttimeout() == 7.0
    assert socket.getdefaulttimeout() is None
    with pytest.raises(DataMissingError):  # the failing path restores it too
        load_cifar100(tiny_config("simple_cil", "split_cifar100", data_root=str(tmp_path), download=False))
    assert socket.getdefaulttimeout() is None
