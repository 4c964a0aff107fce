"""InfLoRA's maths against the spec (§2): parameter counts, the designed down-projection, the
DualGPM memory on synthetic spectra, interference-freedom of the next task, merging."""

import copy

import numpy as np
import pytest
import torch

from helpers import tiny_vit, vit_b_shapes
from cl_bench.strategies.inflora.model import (
    DOWN_SCALE,
    InfLoRANet,
    SubspaceMemory,
    design_down,
    dualgpm_update,
    energy_threshold,
)

#: Energy shares (squared eigenvalues of C) of the synthetic first task: cumulated 0.40, 0.70,
#: 0.85, 0.93, 0.97, 0.99, 1.0, so 4 of them stay below the threshold 0.95 (spec §2.3 step 4).
FIRST_ENERGIES = [40.0, 30.0, 15.0, 8.0, 4.0, 2.0, 1.0]
#: Second task: 10% of its energy inside the kept directions (0-3), then 30, 30, 20, 10 outside;
#: at threshold 0.85 the rule adds 0.3, 0.3, 0.2 to 0.1: three new directions (step 5).
SECOND_ENERGIES = [10.0, 0.0, 0.0, 0.0, 30.0, 30.0, 20.0, 10.0]


def orthonormal(dim, seed=0):
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def gram_with(energies, q):
    """A PSD Gram matrix whose squared eigenvalues are ``energies`` along the columns of ``q``."""
    values = torch.zeros(q.shape[0], dtype=torch.float64)
    values[: len(energies)] = torch.tensor(energies, dtype=torch.float64).sqrt()
    return (q @ torch.diag(values) @ q.T).float()


def projector(basis):
    basis = basis.double()
    return basis @ basis.T


def test_trainable_parameters_per_task_on_vit_b_b5_split():
    net = InfLoRANet(vit_b_shapes(), rank=10)
    for task in range(2):
        net.add_task(5)
        net.set_trainable()
        assert net.trainable_parameters_count() == 188_165  # 2*12*768*10 up + 769*5 head (spec §2.9)
        designed = sum(p.numel() for w in net.wrappers for a in (w.pairs[-1].k, w.pairs[-1].v) for p in a.down.parameters())
        assert designed == 184_320  # frozen
        net.finish_task_()
    net.add_task(10)
    net.set_trainable()
    assert net.trainable_parameters_count() == 192_010


def test_threshold_schedule_uses_the_run_task_count():
    assert [round(energy_threshold(t, 20, 0.95, 1.0), 6) for t in (0, 1, 19)] == [0.95, 0.9525, 0.9975]
    assert [round(energy_threshold(t, 40, 0.98, 1.0), 6) for t in (0, 1, 39)] == [0.98, 0.9805, 0.9995]


@pytest.mark.parametrize("kind", ["first task", "remove", "retain"])
def test_designed_down_projection_equals_a_direct_svd(kind):
    dim, rank = 16, 3
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(dim, 200)) * np.linspace(3, 0.1, dim)[:, None]
    gram = inputs @ inputs.T / 200
    basis = None
    if kind != "first task":
        basis = np.linalg.qr(rng.normal(size=(dim, 5)))[0]
    p = basis @ basis.T if basis is not None else np.zeros((dim, dim))
    m = {"first task": gram, "remove": gram - p @ gram, "retain": p @ gram}[kind]
    u = np.linalg.svd(m)[0][:, :rank]
    down = design_down(torch.tensor(gram, dtype=torch.float32),
                       None if basis is None else torch.tensor(basis, dtype=torch.float32), kind == "retain", rank)
    assert down.shape == (rank, dim)
    assert torch.allclose(down @ down.T, torch.eye(rank) * DOWN_SCALE ** 2, atol=1e-5)
    np.testing.assert_allclose((down.T @ down).double().numpy() / DOWN_SCALE ** 2, u @ u.T, atol=1e-4)


@pytest.mark.parametrize("dim, switched", [(32, False), (12, True)])
def test_dualgpm_keeps_the_directions_the_threshold_rule_gives(dim, switched):
    q = orthonormal(dim)
    basis, retain = dualgpm_update(None, False, gram_with(FIRST_ENERGIES, q), 0.95)
    assert basis.shape == (dim, 4) and not retain
    assert torch.allclose(projector(basis), q[:, :4] @ q[:, :4].T, atol=1e-5)

    unchanged, _ = dualgpm_update(basis, retain, gram_with(SECOND_ENERGIES, q), 0.05)
    assert torch.equal(unchanged, basis)  # already above the threshold: "Skip Updating DualGPM"

    basis, retain = dualgpm_update(basis, retain, gram_with(SECOND_ENERGIES, q), 0.85)
    protected = q[:, :7] @ q[:, :7].T  # directions 0-3, then 4, 5, 6
    if switched:  # 7 > 12 / 2: the basis is swapped for the free space
        assert retain and basis.shape == (dim, 5)
        assert torch.allclose(torch.eye(dim, dtype=torch.float64) - projector(basis), protected, atol=1e-5)
    else:
        assert not retain and basis.shape == (dim, 7)
        assert torch.allclose(projector(basis), protected, atol=1e-5)


def test_dualgpm_first_task_over_half_the_width_stores_the_free_space_and_shrinks_it():
    dim = 16
    q = orthonormal(dim, seed=1)
    # energies 1.15, 1.14, ..., 1.00 (total 17.2): cumulated shares below 0.95 for the first 15
    slow = gram_with([1.0 + 0.01 * (15 - j) for j in range(dim)], q)
    basis, retain = dualgpm_update(None, False, slow, 0.95)
    assert retain and basis.shape == (dim, 1)
    assert torch.allclose(projector(basis), q[:, 15:] @ q[:, 15:].T, atol=1e-5)
    quiet = gram_with([99.0] * 15 + [1.0], q)  # 1% of the energy in the free direction: below 1 - 0.95
    assert dualgpm_update(basis, retain, quiet, 0.95)[0].shape == (dim, 1)
    loud = gram_with([90.0 / 15] * 15 + [10.0], q)  # 10%: the free direction is taken
    basis, retain = dualgpm_update(basis, retain, loud, 0.95)
    assert retain and basis.shape == (dim, 0)


#: 32, 31, ..., 1: the first 25 stay below 0.95 of the energy, more than half of 32 dimensions, so
#: the memory keeps the 7-dimensional free space instead ("retain").
WIDE_ENERGIES = [float(32 - j) for j in range(32)]


@pytest.mark.parametrize("first_energies", [FIRST_ENERGIES, WIDE_ENERGIES], ids=["remove", "retain"])
def test_next_task_lora_leaves_the_protected_inputs_alone(first_energies):
    torch.manual_seed(0)
    net = InfLoRANet(tiny_vit(depth=2, dim=32), rank=4)
    q = orthonormal(32)
    net.add_task(3)
    net.update_memory_([gram_with(first_energies, q)] * 2, 0.95)
    memory = net.memories[0]
    assert (bool(memory.retain), memory.size) == ((False, 4) if first_energies is FIRST_ENERGIES else (True, 7))
    net.finish_task_()
    net.add_task(3)
    mixed = gram_with([5.0, 4.0, 3.0, 2.0, 1.0, 1.0, 1.0, 1.0] + [0.5] * 24, orthonormal(32, seed=7))
    net.design_down_([mixed] * 2)
    wrapper = net.wrappers[0]
    for adapter in (wrapper.pairs[-1].k, wrapper.pairs[-1].v):
        torch.nn.init.normal_(adapter.up.weight)  # as if trained
    p = memory.protected_projector().double()
    h = torch.randn(64, 32, dtype=torch.float64)
    inside, outside = (h @ p).float(), (h - h @ p).float()
    pair = wrapper.pairs[-1]
    for adapter in (pair.k, pair.v):
        assert adapter(inside).abs().max() < 1e-4 * adapter(outside).abs().max()
        assert adapter(outside).abs().max() > 1e-2


def test_gram_collector_is_the_mean_of_h_h_t_over_all_tokens():
    torch.manual_seed(0)
    vit = tiny_vit(depth=2)
    net = InfLoRANet(vit, rank=2)
    net.add_task(2)
    seen = []
    handle = vit.blocks[1].norm1.register_forward_hook(lambda m, i, o: seen.append(o.reshape(-1, o.shape[-1])))
    with torch.no_grad(), net.collect_grams() as collector:
        net(torch.rand(3, 3, 28, 28))
        net(torch.rand(2, 3, 28, 28))
    handle.remove()
    h = torch.cat(seen).double()
    assert collector.counts[1] == 5 * 50  # 49 patches + CLS per image
    assert torch.allclose(collector.grams[1].double(), h.T @ h / h.shape[0], atol=1e-5)


def run_tasks(net, n_tasks, seed=0):
    """Designed downs from collected Gram matrices, random ups as if trained, memory updates."""
    torch.manual_seed(seed)
    x = torch.rand(4, 3, 12, 12)
    outputs = []
    for task in range(n_tasks):
        net.add_task(3)
        net.set_trainable()
        with torch.no_grad(), net.collect_grams() as collector:
            net(x)
        net.design_down_(collector.grams)
        with torch.no_grad():
            for wrapper in net.wrappers:
                for adapter in (wrapper.pairs[-1].k, wrapper.pairs[-1].v):
                    adapter.up.weight.normal_(0, 0.5)
        with torch.no_grad(), net.collect_grams() as collector:
            net(x)
        net.update_memory_(collector.grams, energy_threshold(task, n_tasks, 0.95, 1.0))
        factored = net(x)  # autograd on: the low-rank detour, every component summed
        net.finish_task_()
        with torch.no_grad():
            outputs.append((factored.detach(), net(x)))
    return x, outputs


def test_merged_forward_equals_the_unmerged_one_and_checkpoints_restore_it():
    vit = tiny_vit(depth=2, img_size=12)
    merged, unmerged = InfLoRANet(copy.deepcopy(vit), rank=4), InfLoRANet(copy.deepcopy(vit), rank=4, merge=False)
    x, merged_out = run_tasks(merged, 3)
    _, unmerged_out = run_tasks(unmerged, 3)
    assert merged.n_pairs == 0 and unmerged.n_pairs == 3 and merged.merged_tasks == 3
    for (factored, folded), (factored_u, _) in zip(merged_out, unmerged_out):
        assert torch.allclose(folded, factored, atol=1e-5)  # the fold changes nothing
        assert torch.allclose(factored, factored_u, atol=1e-5)  # nor does merging the earlier tasks
    assert folded.shape == (4, 9)

    restored = InfLoRANet(copy.deepcopy(vit), rank=4)
    for _ in range(3):  # the structure a checkpoint needs: heads, no pairs, folded buffers, memory shapes
        restored.add_task(3)
        restored.finish_task_()
    restored.load_state_dict(merged.state_dict())
    with torch.no_grad():
        assert torch.equal(restored(x), merged(x))
    assert [m.size for m in restored.memories] == [m.size for m in merged.memories]


def test_memory_state_dict_resizes_on_load():
    memory = SubspaceMemory(8)
    memory.update_(gram_with(FIRST_ENERGIES, orthonormal(8)), 0.95)
    fresh = SubspaceMemory(8)
    fresh.load_state_dict(memory.state_dict())
    assert torch.equal(fresh.basis, memory.basis) and bool(fresh.retain) == bool(memory.retain)


def test_presets_follow_the_official_recipe_and_the_schedule_uses_the_real_task_count():
    from cl_bench import catalog  # noqa: F401
    from cl_bench.config import resolve_config
    from cl_bench.errors import ConfigError

    cifar = resolve_config("inflora", "split_cifar100")
    inr = resolve_config("inflora", "imagenet_r")
    assert (cifar.run.lr, cifar.run.epochs, cifar.run.batch_size, cifar.method.threshold_start) == (5e-4, 20, 128, 0.95)
    assert (inr.run.epochs, inr.method.threshold_start, inr.run.backbone) == (50, 0.98, "vit_base_patch16_224.augreg_in21k_ft_in1k")
    assert cifar.method.schedule_tasks(cifar) == 20 and inr.method.schedule_tasks(inr) == 40
    assert resolve_config("inflora", "split_cifar100", preset="reference").method.schedule_tasks(
        resolve_config("inflora", "split_cifar100", preset="reference")) == 10
    with pytest.raises(ConfigError, match="threshold_tasks"):
        resolve_config("inflora", "split_cifar100", {"threshold_tasks": 10})
    with pytest.raises(ConfigError, match="threshold_start"):
        resolve_config("inflora", "split_cifar100", {"threshold_start": 1.0, "threshold_end": 0.99})
