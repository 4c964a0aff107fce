"""EASE against the spec: parameter count, adapter placement, prototypes, the complement, frozen
older adapter sets, the reweighted ensemble, and batched against per-set inference."""

import torch
import torch.nn.functional as F

from cl_bench.baselines.ease.model import EaseNet, complement_prototypes, ensemble_logits
from cl_bench.models.heads import CosineLinear
from helpers import build_strategy, tiny_vit


def test_trainable_parameters_per_task_on_vit_b():
    import timm

    net = EaseNet(timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, global_pool="token"), 64, 0.1, 0.1)
    net.add_adapter_set()
    net.proxy_head = CosineLinear(768, 5)
    net.set_trainable(0)
    head = sum(p.numel() for p in net.proxy_head.parameters())
    assert head == 5 * 768 + 1
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) - head == 1_189_632
    net.add_adapter_set()
    net.set_trainable(1)
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) - head == 1_189_632


def test_zero_up_projection_leaves_the_vit_unchanged():
    vit = tiny_vit().eval()
    x = torch.rand(2, 3, 28, 28)
    expected = vit(x)
    net = EaseNet(vit, 8, 0.1, 0.1).eval()
    net.add_adapter_set()
    with torch.no_grad():
        net.adapter_blocks[0].adapters[0].down.weight.normal_()  # only up starts at zero
    torch.testing.assert_close(net.features(x, [0])[0], expected, atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        net.adapter_blocks[0].adapters[0].up.weight.normal_()
    assert not torch.allclose(net.features(x, [0])[0], expected, atol=1e-4)


def test_adapter_sits_beside_the_mlp_on_the_post_attention_stream():
    vit = tiny_vit(depth=1).eval()
    net = EaseNet(vit, 8, 0.5, 0.0).eval()
    net.add_adapter_set()
    block = net.adapter_blocks[0]
    with torch.no_grad():
        for p in block.adapters[0].parameters():
            p.normal_()
    x = torch.randn(2, 5, 32)
    b = block.block
    mid = x + b.attn(b.norm1(x))
    a = block.adapters[0]
    expected = mid + b.mlp(b.norm2(mid)) + 0.5 * a.up(F.relu(a.down(mid)))
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


def test_prototypes_are_class_means_in_every_subspace():
    strategy, streams = build_strategy("ease", train_per_class=3)
    for t in range(2):
        strategy.train(streams.train_stream[t], eval_streams=[])
    model = strategy.model.eval()
    data = streams.train_stream[1].dataset.eval()
    xs = torch.stack([data[i][0] for i in range(len(data))])
    ys = torch.tensor([data[i][1] for i in range(len(data))])
    with torch.no_grad():
        features = model.features(xs, [0, 1])  # (2, N, D)
    for c in range(4, 8):
        for s in range(2):
            torch.testing.assert_close(model.prototypes[c, s], features[s, ys == c].mean(0), atol=1e-5, rtol=1e-5)


def test_prototype_complement_by_hand():
    # 3 tasks of 1 class each (classes 0, 1, 2), 3 subspaces, D = 2
    P = torch.zeros(3, 3, 2)
    P[0, 0] = torch.tensor([1.0, 0.0])
    P[1, :2] = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    P[2, :] = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 3.0]])
    out = complement_prototypes(P, [(0, 1), (1, 2), (2, 3)])

    def cos(a, b):
        return float(a @ b / a.norm() / b.norm())

    # class 0 (task 0) in subspace 1: reference classes 1, 2, similarity measured in subspace 0
    w = torch.softmax(torch.tensor([cos(P[0, 0], P[1, 0]), cos(P[0, 0], P[2, 0])]), 0)
    torch.testing.assert_close(out[0, 1], w[0] * P[1, 1] + w[1] * P[2, 1])
    # class 0 in subspace 2: only class 2 has a real prototype there -> weight 1
    torch.testing.assert_close(out[0, 2], P[2, 2])
    # class 1 (task 1) in subspace 2: reference class 2, similarity in subspace 1
    torch.testing.assert_close(out[1, 2], P[2, 2])
    # real prototypes are kept
    torch.testing.assert_close(out[2], P[2])
    torch.testing.assert_close(out[:2, 0], P[:2, 0])


def test_ensemble_with_alpha_zero_is_the_diagonal():
    torch.manual_seed(0)
    features, prototypes = torch.randn(3, 4, 6), torch.randn(6, 3, 6)
    ranges = [(0, 2), (2, 4), (4, 6)]
    diagonal = torch.cat([F.normalize(features[i], dim=-1) @ F.normalize(prototypes[a:b, i], dim=-1).T
                          for i, (a, b) in enumerate(ranges)], dim=1)
    torch.testing.assert_close(ensemble_logits(features, prototypes, ranges, alpha=0.0), diagonal)
    # alpha > 0 adds alpha / t times the other subspaces' cosines (t = 2 other subspaces)
    full = ensemble_logits(features, prototypes, ranges, alpha=0.1)
    cos = lambda j, c: F.cosine_similarity(features[j], prototypes[c, j].expand(4, -1), dim=-1)  # noqa: E731
    torch.testing.assert_close(full[:, 3], cos(1, 3) + 0.1 / 2 * (cos(0, 3) + cos(2, 3)), atol=1e-6, rtol=1e-5)


def test_older_adapter_sets_stay_frozen_and_batched_inference_equals_per_set():
    strategy, streams = build_strategy("ease")
    strategy.train(streams.train_stream[0], eval_streams=[])
    first = {n: p.detach().clone() for n, p in strategy.model.named_parameters() if ".adapters.0." in n}
    strategy.train(streams.train_stream[1], eval_streams=[])
    for name, p in strategy.model.named_parameters():
        if ".adapters.0." in name:
            assert torch.equal(p, first[name]) and not p.requires_grad
    changed = [n for n, p in strategy.model.named_parameters() if ".adapters.1.up." in n and p.abs().sum() > 0]
    assert changed  # the new set trained
    x = torch.rand(5, 3, 28, 28)
    model = strategy.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.features(x, [0, 1], batched=True), model.features(x, [0, 1], batched=False),
                                   atol=1e-5, rtol=1e-5)
