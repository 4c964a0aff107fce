"""SD-LoRA's network against the spec (§3): parameter counts, frozen normalised directions,
magnitudes as the only old-task parameters that train, growth past the official 21 tasks."""

import pytest
import torch
import torch.nn.functional as F

from helpers import tiny_vit, vit_b_shapes
from cl_bench.strategies.sd_lora.model import SDLoRANet, normalise_direction_, rank_for_task


def test_trainable_parameters_per_task_on_vit_b():
    net = SDLoRANet(vit_b_shapes())
    for task in range(3):
        net.add_task(5, rank=10)
        # 2*12*2*768*10 LoRA + one magnitude per task so far + the new head rows (spec §3.7)
        assert net.trainable_parameters_count() == 368_640 + (task + 1) + 769 * 5
    net.add_task(5, rank=8)
    assert net.trainable_parameters_count() == 294_912 + 4 + 769 * 5


def test_rank_reduction_schedule():
    assert [rank_for_task(t, 10, (4, 8), (8, 6)) for t in range(10)] == [10] * 4 + [8] * 4 + [6] * 2
    assert [rank_for_task(t, 10) for t in (0, 30)] == [10, 10]


def train_steps(net, x, steps=3, lr=0.05):
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9)
    for _ in range(steps):
        logits = net.train_logits(x)
        loss = F.cross_entropy(logits, torch.arange(len(x)) % logits.shape[1])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def snapshot(module):
    return {name: t.detach().clone() for name, t in module.state_dict().items()}


def test_old_directions_stay_and_magnitudes_are_the_only_old_parameters_that_train():
    torch.manual_seed(0)
    net = SDLoRANet(tiny_vit(depth=2))
    x = torch.rand(6, 3, 28, 28)
    net.add_task(3, rank=4)
    train_steps(net, x)
    net.finish_task_()
    first = net.wrappers[0].pairs[0].q
    raw = first.delta_weight().detach().clone()
    norms = float(first.up.weight.norm() * first.down.weight.norm())
    assert norms > 0

    net.add_task(3, rank=4)  # freezes and normalises task 0's component
    assert torch.allclose(first.delta_weight(), raw / norms, atol=1e-6)
    assert torch.allclose(first.up.weight.norm(), torch.tensor(1.0)) and torch.allclose(first.down.weight.norm(), torch.tensor(1.0))
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    current = {id(p) for w in net.wrappers for p in w.pairs[1].parameters()} | {id(p) for p in net.heads.heads[1].parameters()}
    magnitudes = {id(m) for m in net.magnitudes}
    assert trainable == current | magnitudes and len(magnitudes) == 2

    old_pairs = snapshot(torch.nn.ModuleList(w.pairs[0] for w in net.wrappers))
    old_head = snapshot(net.heads.heads[0])
    train_steps(net, x)
    assert all(torch.equal(a, b) for a, b in zip(old_pairs.values(), snapshot(torch.nn.ModuleList(w.pairs[0] for w in net.wrappers)).values()))
    assert all(torch.equal(a, b) for a, b in zip(old_head.values(), snapshot(net.heads.heads[0]).values()))
    assert all(float(m.detach()) != pytest.approx(0.8) for m in net.magnitudes)  # both magnitudes trained

    net.finish_task_()
    net.add_task(3, rank=4)
    assert all(torch.equal(a, b) for a, b in zip(old_pairs.values(), snapshot(torch.nn.ModuleList(w.pairs[0] for w in net.wrappers)).values()))
    second = net.wrappers[0].pairs[1].q
    assert torch.allclose(second.up.weight.norm(), torch.tensor(1.0))


@pytest.mark.parametrize("reset, expected", [(True, [0.8, 0.8, 0.8]), (False, None)])
def test_magnitudes_are_recreated_every_task_as_the_reference_does(reset, expected):
    torch.manual_seed(0)
    net = SDLoRANet(tiny_vit(depth=2), reset_magnitudes=reset)
    x = torch.rand(4, 3, 28, 28)
    for _ in range(2):
        net.add_task(2, rank=2)
        train_steps(net, x)
    learned = [float(m.detach()) for m in net.magnitudes]
    net.add_task(2, rank=2)
    values = [float(m.detach()) for m in net.magnitudes]
    assert values == pytest.approx(expected if reset else learned + [0.8])


def test_product_normalisation_gives_a_unit_update():
    torch.manual_seed(0)
    net = SDLoRANet(tiny_vit(depth=1), direction_norm="product")
    net.add_task(2, rank=3)
    adapter = net.wrappers[0].pairs[0].v
    torch.nn.init.normal_(adapter.up.weight)
    before = adapter.delta_weight().detach().clone()
    normalise_direction_(adapter, "product")
    assert torch.allclose(adapter.delta_weight().norm(), torch.tensor(1.0), atol=1e-6)
    assert torch.allclose(adapter.delta_weight() * before.norm(), before, atol=1e-5)


def test_forty_tasks_grow_past_the_official_21_magnitude_slots():
    torch.manual_seed(0)
    net = SDLoRANet(tiny_vit(depth=2, dim=16, heads=2, img_size=8))
    x = torch.rand(4, 3, 8, 8)
    for task in range(40):
        net.add_task(5, rank=rank_for_task(task, 4, (4, 8), (3, 2)))
        train_steps(net, x, steps=1)
        net.finish_task_()
    assert len(net.magnitudes) == 40 and net.heads.sizes == [5] * 40 and len(net.wrappers[0].pairs) == 40
    assert net.ranks == [4] * 4 + [3] * 4 + [2] * 32
    factored = net(x)  # autograd on: one low-rank term per task
    with torch.no_grad():
        merged = net(x)  # folded into Q and V
    assert merged.shape == (4, 200) and torch.isfinite(merged).all()
    assert torch.allclose(merged, factored, atol=1e-4)


def test_presets_follow_the_official_recipe_and_bad_rank_schedules_are_refused():
    from cl_bench import catalog  # noqa: F401
    from cl_bench.config import resolve_config
    from cl_bench.errors import ConfigError

    cifar = resolve_config("sd_lora", "split_cifar100")
    inr = resolve_config("sd_lora", "imagenet_r", preset="own_backbone")
    assert (cifar.run.lr, cifar.run.epochs, cifar.run.batch_size, cifar.run.weight_decay) == (8e-3, 20, 128, 0.0)
    assert (cifar.method.momentum, cifar.method.magnitude_init, cifar.method.rank) == (0.9, 0.8, 10)
    assert (inr.run.lr, inr.run.backbone) == (1e-2, "vit_base_patch16_224.augreg2_in21k_ft_in1k")
    with pytest.raises(ConfigError, match="rr_ranks"):
        resolve_config("sd_lora", "split_cifar100", {"rr_ranks": "8"})
    with pytest.raises(ConfigError, match="rr_milestones"):
        resolve_config("sd_lora", "split_cifar100", {"rr_milestones": "8,4"})
