"""The LoRA-on-qkv module CL-LoRA, InfLoRA and SD-LoRA share (cl_bench/models/lora.py), and the
per-task linear heads of InfLoRA and SD-LoRA."""

import math

import pytest
import torch
from torch import nn

from cl_bench.models.heads import TaskLinearHeads
from cl_bench.models.lora import LoRAQKV, count_trainable, inject_lora, lora_wrappers
from helpers import tiny_vit

DIM = 8


def wrapper_with_pairs(slices, n_pairs=3, rank=2, seed=0):
    torch.manual_seed(seed)
    wrapper = LoRAQKV(nn.Linear(DIM, 3 * DIM), slices, orthogonal_down=False)
    for _ in range(n_pairs):
        pair = wrapper.add_pair(rank)
        for adapter in pair.adapters():
            nn.init.normal_(adapter.up.weight)
    return wrapper.requires_grad_(False)


def slices_of(out):
    return out[..., :DIM], out[..., DIM: 2 * DIM], out[..., 2 * DIM:]


@pytest.mark.parametrize("slices, changed", [(("q", "v"), (True, False, True)), (("k", "v"), (False, True, True))])
def test_only_the_chosen_slices_change(slices, changed):
    wrapper = wrapper_with_pairs(slices)
    h = torch.randn(4, 5, DIM)
    plain = slices_of(wrapper.qkv(h))
    adapted = slices_of(wrapper(h))
    assert [not torch.equal(a, p) for a, p in zip(adapted, plain)] == list(changed)


def test_a_group_of_terms_is_the_weighted_sum_of_its_pairs_with_and_without_autograd():
    wrapper = wrapper_with_pairs(("k", "v"))
    h = torch.randn(4, 5, DIM)
    alpha = torch.tensor(0.7, requires_grad=True)
    wrapper.groups = [[(0, 1.0, 2.0), (1, alpha, alpha), (2, -0.5, 0.25)]]
    expected = wrapper.qkv(h).detach().clone()
    weights = [(1.0, 2.0), (0.7, 0.7), (-0.5, 0.25)]
    for (w_k, w_v), pair in zip(weights, wrapper.pairs):
        expected[..., DIM: 2 * DIM] += w_k * pair.k(h)
        expected[..., 2 * DIM:] += w_v * pair.v(h)
    summed = wrapper(h)
    assert torch.allclose(summed, expected, atol=1e-5)
    summed.sum().backward()
    assert alpha.grad is not None and alpha.grad != 0  # a magnitude gets its gradient through the sum
    with torch.no_grad():
        assert torch.allclose(wrapper(h), expected, atol=1e-5)  # folded into one weight at inference


def test_folding_a_pair_is_the_same_function_and_survives_a_state_dict():
    wrapper = wrapper_with_pairs(("k", "v"), n_pairs=2)
    h = torch.randn(3, 5, DIM)
    wrapper.groups = [[(0, 1.0, 1.0), (1, 1.0, 1.0)]]
    expected = wrapper(h)
    wrapper.fold_(0)
    wrapper.groups = [[(1, 1.0, 1.0)]]
    assert torch.allclose(wrapper(h), expected, atol=1e-5)
    fresh = LoRAQKV(nn.Linear(DIM, 3 * DIM), ("k", "v"), orthogonal_down=False)
    fresh.add_pair(2), fresh.add_pair(2)
    assert fresh.folded is None
    fresh.load_state_dict(wrapper.state_dict())
    fresh.groups = [[(1, 1.0, 1.0)]]
    assert torch.allclose(fresh(h), expected, atol=1e-5)
    assert torch.equal(fresh.qkv.weight, wrapper.qkv.weight)  # the frozen weight itself is never written


def test_empty_group_is_the_plain_projection_and_mixed_groups_are_refused():
    wrapper = wrapper_with_pairs(("q", "v"))
    h = torch.randn(2, 5, DIM)
    wrapper.groups = [[]]
    assert torch.equal(wrapper(h), wrapper.qkv(h))
    with torch.no_grad():
        assert torch.equal(wrapper(h), wrapper.qkv(h))
    wrapper.groups = [[(0, 1.0, 1.0)], [(1, 1.0, 1.0), (2, 1.0, 1.0)]]
    with pytest.raises(ValueError, match="one term each"):
        wrapper(torch.randn(4, 5, DIM))
    with pytest.raises(ValueError, match="slices"):
        LoRAQKV(nn.Linear(DIM, 3 * DIM), ("q", "x"))


def test_injection_and_trainable_count():
    vit = tiny_vit(depth=3)
    wrappers = inject_lora(vit, ("k", "v"), blocks=[0, 2])
    assert lora_wrappers(vit) == wrappers and [w.slices for w in wrappers] == [("k", "v")] * 2
    for w in wrappers:
        w.add_pair(4)
    vit.requires_grad_(False)
    wrappers[0].pairs[0].k.up.requires_grad_(True)
    head = nn.Linear(32, 5)
    assert count_trainable(nn.ModuleList([vit, head])) == 32 * 4 + 32 * 5 + 5
    assert count_trainable(nn.ModuleList([vit, head]), exclude=[head]) == 32 * 4


@pytest.mark.parametrize("init, bound, zero_bias", [("torch", 1 / math.sqrt(64), False), ("linear", math.sqrt(3 / 64), True)])
def test_task_heads_initialise_and_concatenate(init, bound, zero_bias):
    torch.manual_seed(0)
    heads = TaskLinearHeads(64, init=init)
    heads.add(5), heads.add(3)
    assert heads.sizes == [5, 3] and len(heads) == 2
    weight = heads.heads[0].weight
    assert weight.abs().max() <= bound and weight.abs().max() > 0.9 * bound
    assert (torch.count_nonzero(heads.heads[1].bias) == 0) == zero_bias
    z = torch.randn(4, 64)
    assert torch.equal(heads(z), torch.cat([heads.heads[0](z), heads.heads[1](z)], dim=1))
    assert torch.equal(heads(z, slice(1, 2)), heads.heads[1](z))
