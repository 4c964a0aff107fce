"""The PETL modules RanPAC, APER and the reference rows share (baselines/first_session.py,
cl_bench/models/petl.py): placement by hand computation, the off switch, and the config choices."""

import torch
import torch.nn.functional as F

from cl_bench.baselines.first_session import INJECTORS, PETL_KINDS, PetlOptions, add_petl
from cl_bench.baselines.finetune.config import TRAINABLE_PARTS
from cl_bench.models.petl import petl_disabled
from helpers import tiny_vit


def test_every_petl_kind_the_configs_offer_has_an_injector():
    assert tuple(INJECTORS) == PETL_KINDS and TRAINABLE_PARTS == ("head", *PETL_KINDS)


def perturb(params, scale=0.1):
    with torch.no_grad():
        for p in params:
            p.add_(scale * torch.randn_like(p))


def test_adapter_adds_beside_the_mlp_in_the_reference_order_and_switches_off():
    torch.manual_seed(0)
    vit = tiny_vit(depth=1).eval()
    stock = vit.blocks[0]
    x = torch.randn(2, 5, 32)
    expected_stock = stock(x)
    perturb(add_petl(vit, "adapter", PetlOptions(adapter_dim=8, adapter_scale=0.5)))
    block = vit.blocks[0].eval()  # no adapter dropout
    a = block.adapters[0]
    mid = x + stock.attn(stock.norm1(x))
    expected = mid + (stock.mlp(stock.norm2(mid)) + 0.5 * a.up(F.relu(a.down(mid))))
    with torch.no_grad():
        assert torch.equal(block(x), expected)
        with petl_disabled(vit):
            assert torch.equal(block(x), expected_stock)


def test_ssf_scales_and_shifts_after_each_site_by_hand():
    torch.manual_seed(0)
    vit = tiny_vit(depth=1).eval()
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        stock_out = vit.blocks[0](x)
        params = add_petl(vit, "ssf", PetlOptions())
        perturb(params, 0.3)
        b = vit.blocks[0]
        a, m = b.attn, b.mlp

        def ss(module, y):
            return y * module.ssf_scale + module.ssf_shift

        h = ss(b.norm1, F.layer_norm(x, (32,), b.norm1.weight, b.norm1.bias, b.norm1.eps))
        qkv = ss(a.qkv, F.linear(h, a.qkv.weight, a.qkv.bias)).reshape(2, 5, 3, 2, 16).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(2, 5, 32)
        mid = x + ss(a.proj, F.linear(attn, a.proj.weight, a.proj.bias))
        h = ss(b.norm2, F.layer_norm(mid, (32,), b.norm2.weight, b.norm2.bias, b.norm2.eps))
        h = F.gelu(ss(m.fc1, F.linear(h, m.fc1.weight, m.fc1.bias)))
        expected = mid + ss(m.fc2, F.linear(h, m.fc2.weight, m.fc2.bias))
        torch.testing.assert_close(b(x), expected, atol=1e-5, rtol=1e-5)
        with petl_disabled(vit):
            assert torch.equal(b(x), stock_out)
    assert len(params) == 2 * (1 + 6 + 1)  # patch embedding, six sites per block, final norm


def test_vpt_appends_tokens_after_the_patches_and_drops_them():
    torch.manual_seed(0)
    for deep in (True, False):
        vit = tiny_vit(depth=2).eval()
        blocks = [vit.blocks[0], vit.blocks[1]]
        x = torch.randn(2, 5, 32)
        with torch.no_grad():
            stock_out = blocks[1](blocks[0](x))
            params = add_petl(vit, "vpt_deep" if deep else "vpt_shallow", PetlOptions(vpt_tokens=3))
            perturb(params)
            assert len(params) == (2 if deep else 1) and params[0].shape == (1, 3, 32)
            p0 = blocks[0].vpt_prompt.expand(2, -1, -1)
            if deep:
                first = blocks[0].forward(torch.cat([x, p0], 1))[:, :5]  # forward: without the hooks
                p1 = blocks[1].vpt_prompt.expand(2, -1, -1)
                expected = blocks[1].forward(torch.cat([first, p1], 1))[:, :5]
            else:
                expected = blocks[1].forward(blocks[0].forward(torch.cat([x, p0], 1)))[:, :5]
            torch.testing.assert_close(vit.blocks(x), expected)
            with petl_disabled(vit):
                assert torch.equal(vit.blocks(x), stock_out)
