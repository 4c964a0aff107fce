"""CL-LoRA's maths against the spec: parameter counts, inits, KD, reassignment, orthogonality loss,
and shared-half inference against the reference's one-full-pass-per-task inference."""

import pytest
import torch

from cl_bench.models.heads import CosineLinear
from helpers import tiny_cl_lora_net, tiny_vit
from cl_bench.strategies.cl_lora.losses import (
    block_weight_orthogonality,
    distillation_loss,
    reassign_gradient,
    reassignment_weights,
    soft_target_cross_entropy,
)
from cl_bench.strategies.cl_lora.lora import QVLoRAQKV
from cl_bench.strategies.cl_lora.model import STUDENT, CLLoRANet


def vit_b():
    import timm

    return timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, global_pool="token")


@pytest.mark.parametrize("rank, expected", [(8, 221_202), (10, 276_498)])
def test_trainable_parameters_per_experience_on_vit_b(rank, expected):
    net = CLLoRANet(vit_b(), rank=rank, shared_blocks=6)
    net.set_trainable(0)
    assert net.trainable_backbone_parameters() == expected
    net.proxy_head = CosineLinear(768, 5)
    net.set_trainable(0)
    assert net.trainable_backbone_parameters() == expected  # the head is counted apart
    net.add_branch()
    net.set_trainable(1)
    assert net.trainable_backbone_parameters() == expected  # the old branch is frozen


def test_down_rows_orthonormal_and_up_zero_at_init():
    torch.manual_seed(0)
    net = CLLoRANet(tiny_vit(), rank=4, shared_blocks=2)
    wrappers = net.shared_wrappers + net.specific_wrappers
    assert all(isinstance(w, QVLoRAQKV) for w in wrappers) and len(wrappers) == 4
    for wrapper in wrappers:
        for adapter in (wrapper.pairs[0].q, wrapper.pairs[0].v):
            down = adapter.down.weight
            assert down.shape == (4, 32)
            assert torch.allclose(down @ down.T, torch.eye(4), atol=1e-5)
            assert torch.count_nonzero(adapter.up.weight) == 0
    lo, hi = net.block_weights[0].min(), net.block_weights[0].max()
    assert net.block_weights[0].shape == (3, 2) and 0.5 <= lo and hi <= 1.5


def test_zero_adapters_leave_the_vit_unchanged():
    vit = tiny_vit().eval()
    x = torch.rand(2, 3, 28, 28)
    expected = vit(x)
    net = CLLoRANet(vit, rank=4, shared_blocks=2).eval()
    assert torch.allclose(net.full_pass(x, 0), expected, atol=1e-6)


def test_soft_target_cross_entropy_by_hand():
    s = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 2.0]])
    t = torch.tensor([[0.0, 1.0, 3.0], [2.0, 0.0, 0.0]])
    T = 2.0
    expected = 0.0
    for b in range(2):
        q = torch.exp(t[b] / T) / torch.exp(t[b] / T).sum()
        log_p = s[b] / T - torch.log(torch.exp(s[b] / T).sum())
        expected += -(q * log_p).sum()
    expected /= 2
    assert torch.allclose(soft_target_cross_entropy(s, t, T), expected)
    assert torch.allclose(distillation_loss(s, t, weight=5.0, temperature=T), 5 * expected)


def test_teacher_logits_are_not_detached():
    head = CosineLinear(4, 3)
    student = torch.rand(2, 4)
    teacher = torch.rand(2, 4)
    loss = distillation_loss(head(student), head(teacher), weight=5.0, temperature=2.0)
    grad_full = torch.autograd.grad(loss, head.weight)[0]
    loss_detached = distillation_loss(head(student), head(teacher).detach(), weight=5.0, temperature=2.0)
    grad_student_only = torch.autograd.grad(loss_detached, head.weight)[0]
    assert not torch.allclose(grad_full, grad_student_only)


def test_gradient_reassignment_by_hand():
    old_up = torch.tensor([[3.0, 4.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])  # row norms 5, 1, 1, 0
    weights = reassignment_weights(old_up)
    assert torch.allclose(weights, torch.tensor([20 / 7, 4 / 7, 4 / 7, 0.0]))
    assert torch.isclose(weights.mean(), torch.tensor(1.0))
    grad = torch.arange(8.0).view(4, 2)
    assert torch.allclose(reassign_gradient(grad, weights), grad * weights[:, None])
    assert torch.equal(reassignment_weights(torch.zeros(4, 2)), torch.ones(4))


def test_orthogonality_loss_value():
    w0 = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    w1 = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    w2 = torch.tensor([[0.0, 0.0], [0.0, 0.0], [-2.0, 0.0]])
    now = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    expected = (abs(1 / 2 ** 0.5) + abs(1 / 2) + abs(-1 / 2 ** 0.5)) / 3
    assert torch.isclose(block_weight_orthogonality([w0, w1, w2], now), torch.tensor(expected), atol=1e-6)
    assert block_weight_orthogonality([], now) == 0


@pytest.mark.parametrize("growth", [True, False])
def test_shared_half_inference_equals_reference_inference(growth):
    net = tiny_cl_lora_net(growth=growth)
    x = torch.rand(5, 3, 28, 28)
    with torch.no_grad():
        fast, naive = net.predict(x), net.predict_naive(x)
    assert fast.shape == (5, 9)
    torch.testing.assert_close(fast, naive, atol=1e-5, rtol=1e-5)
    assert torch.equal(fast.argmax(1), naive.argmax(1))


def test_merged_inference_weights_equal_the_low_rank_path():
    net = tiny_cl_lora_net()
    x = torch.rand(4, 3, 28, 28)
    with torch.no_grad():
        merged = net.branch_features(x, [0, 1, 2])
    low_rank = net.branch_features(x, [0, 1, 2]).detach()  # grad enabled: the low-rank path
    torch.testing.assert_close(merged, low_rank, atol=1e-5, rtol=1e-5)


def test_teacher_snapshot_is_a_frozen_copy():
    net = tiny_cl_lora_net()
    net.snapshot_teacher()
    for student, teacher in zip(net.shared_pairs(STUDENT), net.shared_pairs(1)):
        assert torch.equal(student.q.up.weight, teacher.q.up.weight)
        assert not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        net.shared_pairs(STUDENT)[0].q.up.weight.add_(1.0)
    assert not torch.equal(net.shared_pairs(STUDENT)[0].q.up.weight, net.shared_pairs(1)[0].q.up.weight)
