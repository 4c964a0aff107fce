"""DualPrompt against the spec (more_baselines_prompt_analytic.md §2): parameter counts on ViT-B/16,
the per-sample prefix layout, the reference's reshape bug on a hand-built case, selection, the pull
constraint, and which parameters a training step reaches."""

import pytest
import torch
import torch.nn.functional as F

from cl_bench.baselines.dual_prompt.model import (DualPromptNet, gather_e_prefixes, keep_columns, pull_constraint_similarity,
                                         select_e_prompt)
from helpers import tiny_vit


def vit_b_on_meta():
    import timm

    with torch.device("meta"):
        return timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, global_pool="token")


def trainable(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("n_classes, pool_size, e_length, expected", [
    (100, 10, 5, 330_340),     # PILOT dualprompt.json (checked by running PILOT, spec §5)
    (200, 10, 5, 407_240),     # PILOT dualprompt_inr.json
    (200, 10, 20, 1_098_440),  # official ImageNet-R
    (100, 20, 5, 568_420),     # the suite's CIFAR B5-5-20, M = T
    (200, 40, 5, 1_121_480),   # ImageNet-R B5-5-40, L_e = 5
    (200, 40, 20, 3_886_280),  # ImageNet-R B5-5-40, L_e = 20
])
def test_trainable_parameter_counts_of_the_spec(n_classes, pool_size, e_length, expected):
    with torch.device("meta"):
        net = DualPromptNet(vit_b_on_meta(), n_classes, pool_size, e_length=e_length)
    assert trainable(net) == expected
    assert net.g_prompt.shape == (2, 2, 5, 768) and net.e_prompt.shape == (3, 2, pool_size, e_length, 768)
    assert net.keys.shape == (pool_size, 768)


def test_per_sample_prompt_choice_gives_the_same_logits_in_a_batch_as_alone():
    torch.manual_seed(0)
    net = DualPromptNet(tiny_vit(depth=5), n_classes=6, pool_size=4).eval()
    x = torch.rand(4, 3, 28, 28)
    idx = torch.tensor([[2], [0], [3], [1]])
    with torch.no_grad():
        batch = net(x, idx)
        alone = torch.cat([net(x[i: i + 1], idx[i: i + 1]) for i in range(4)])
        net.prefix_layout = "batch_mixed"
        mixed = net(x, idx)
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=1e-5)
    assert (mixed - alone).abs().max() > 1e-3  # the reference's layout leaks across the batch


def coded_pool(layers=3, pool=4, length=2, dim=3):
    """E-prompt values 1000*layer + 100*kv + 10*entry + position, the same across the feature axis."""
    code = torch.zeros(layers, 2, pool, length, dim)
    for l in range(layers):
        for kv in range(2):
            for m in range(pool):
                for pos in range(length):
                    code[l, kv, m, pos] = 1000 * l + 100 * kv + 10 * m + pos
    return code


def decode(prefix):
    """(kv, entry) of a gathered prefix (length 2, positions 0 and 1), checking the position order."""
    values = prefix[:, 0]
    assert torch.equal(values - values[0], torch.tensor([0.0, 1.0]))  # positions stay in order
    v = int(values[0]) % 1000
    return ("KV"[v // 100], (v % 100) // 10)


@pytest.mark.parametrize("idx, expected", [
    # per-sample entries 0..3: sample b gets the key halves of samples 2b, 2b+1 (b < B/2), else their value halves
    ([0, 1, 2, 3], [[("K", 0), ("K", 1)], [("K", 2), ("K", 3)], [("V", 0), ("V", 1)], [("V", 2), ("V", 3)]]),
    # one entry for all (training, or the vote): the first half gets (P_K, P_K), the second (P_V, P_V)
    ([2, 2, 2, 2], [[("K", 2), ("K", 2)], [("K", 2), ("K", 2)], [("V", 2), ("V", 2)], [("V", 2), ("V", 2)]]),
    # odd B: only the middle sample gets the correct (P_K, P_V)
    ([1, 1, 1], [[("K", 1), ("K", 1)], [("K", 1), ("V", 1)], [("V", 1), ("V", 1)]]),
])
def test_batch_mixed_layout_reproduces_the_reference_reshape_on_a_hand_built_case(idx, expected):
    pool = coded_pool()
    ids = torch.tensor(idx).unsqueeze(1)
    mixed = gather_e_prefixes(pool, ids, "batch_mixed")
    correct = gather_e_prefixes(pool, ids, "per_sample")
    assert mixed.shape == correct.shape == (3, len(idx), 2, 2, 3)
    for layer in range(3):
        for b, (key_prefix, value_prefix) in enumerate(expected):
            assert [decode(mixed[layer, b, 0]), decode(mixed[layer, b, 1])] == [key_prefix, value_prefix]
            assert [decode(correct[layer, b, 0]), decode(correct[layer, b, 1])] == [("K", idx[b]), ("V", idx[b])]
            assert int(mixed[layer, b, 0, 0, 0]) // 1000 == layer  # layers never mix


def test_training_forces_the_true_task_and_testing_matches_the_nearest_key():
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    query = torch.tensor([[0.9, 0.1], [0.1, 0.9], [-0.8, -0.3], [0.0, 2.0]])
    assert select_e_prompt(query, keys, task=1).flatten().tolist() == [1, 1, 1, 1]
    assert select_e_prompt(query, keys).flatten().tolist() == [0, 1, 2, 1]
    assert select_e_prompt(query, keys, n_trained=2).flatten().tolist() == [0, 1, 1, 1]  # key 2 untrained: left out
    assert select_e_prompt(query, keys, batchwise=True).flatten().tolist() == [1, 1, 1, 1]  # the batch's majority


def test_pull_constraint_is_the_mean_cosine_to_the_true_tasks_key_and_trains_only_that_key():
    keys = torch.randn(4, 8, requires_grad=True)
    query = torch.randn(5, 8)
    idx = torch.full((5, 1), 2)
    similarity = pull_constraint_similarity(query, keys, idx)
    torch.testing.assert_close(similarity, F.cosine_similarity(query, keys[2].expand(5, -1), dim=1).mean())
    similarity.backward()
    assert keys.grad[2].abs().sum() > 0 and keys.grad[[0, 1, 3]].abs().sum() == 0


def test_a_training_step_reaches_the_g_prompt_the_true_tasks_e_prompt_and_its_classes_only():
    torch.manual_seed(0)
    net = DualPromptNet(tiny_vit(depth=5), n_classes=6, pool_size=3)
    x, y = torch.rand(4, 3, 28, 28), torch.tensor([2, 3, 2, 3])
    idx = select_e_prompt(torch.randn(4, 32), net.keys, task=1)
    loss = F.cross_entropy(keep_columns(net(x, idx), slice(2, 4)), y)
    loss.backward()
    assert net.g_prompt.grad.abs().sum() > 0
    assert net.e_prompt.grad[:, :, 1].abs().sum() > 0
    assert net.e_prompt.grad[:, :, [0, 2]].abs().sum() == 0
    assert net.head.weight.grad[2:4].abs().sum() > 0
    assert net.head.weight.grad[[0, 1, 4, 5]].abs().sum() == 0  # masked classes: no gradient
    assert net.keys.grad is None  # keys learn from the pull constraint only
    assert all(p.grad is None for p in net.prompted.parameters())  # the ViT is frozen


def test_prefixes_sit_in_their_blocks_and_a_new_e_prompt_starts_from_the_previous_one():
    net = DualPromptNet(tiny_vit(depth=5), n_classes=4, pool_size=3)
    idx = torch.tensor([[1], [1]])
    prefixes = net.prefixes(idx)
    assert sorted(prefixes) == [0, 1, 2, 3, 4]
    assert torch.equal(prefixes[1][1][0], net.g_prompt[1, 1]) and torch.equal(prefixes[3][0][1], net.e_prompt[1, 0, 1])
    keys_before = net.keys.detach().clone()
    net.copy_e_prompt(0, 1)
    assert torch.equal(net.e_prompt[:, :, 1], net.e_prompt[:, :, 0]) and torch.equal(net.keys, keys_before)


def test_prompt_inits():
    torch.manual_seed(0)
    for init, low, high in (("pytorch", -1.0, 1.0), ("jax", 0.0, 0.01)):
        net = DualPromptNet(tiny_vit(depth=5), n_classes=4, pool_size=3, prompt_init=init)
        for p in (net.g_prompt, net.e_prompt, net.keys):
            assert low <= p.min() and p.max() <= high and p.std() > (high - low) / 10
