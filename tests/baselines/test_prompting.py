"""L2P and CODA-Prompt against the spec: parameter counts, selection, key loss, masking, frozen
slices, Gram-Schmidt, the shared prompted-ViT mechanism and the query cache."""

import pytest
import torch
from avalanche.core import SupervisedPlugin

from cl_bench.baselines.coda_prompt.model import CodaPromptNet, gram_schmidt_rows
from cl_bench.baselines.coda_prompt.strategy import coda_cosine_factor
from cl_bench.baselines.l2p.model import L2PNet, batchwise_vote, key_matching_similarity, select_prompts
from cl_bench.models.prompting import PromptedViT
from helpers import build_strategy, tiny_vit


def vit_b():
    import timm

    return timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, global_pool="token")


def trainable(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_trainable_parameter_counts_of_the_spec():
    assert trainable(L2PNet(vit_b(), n_classes=100, pool_size=10, prompt_length=5, top_k=5, batchwise=True, batchwise_eval=True)) == 122_980
    coda = CodaPromptNet(vit_b(), n_classes=100, n_tasks=10, pool_size=100, length=8, layers=range(5), ortho_weight=0.0)
    assert trainable(coda) == 3_916_900


def test_zero_length_prompts_and_prefixes_give_the_stock_vit_exactly():
    vit = tiny_vit().eval()
    x = torch.rand(3, 3, 28, 28)
    expected = vit.forward_features(x)
    prompted = PromptedViT(vit, prefix_blocks=[0, 1])
    empty = torch.zeros(3, 0, 32)
    tokens = prompted.forward_tokens(x, prompts=empty, prefixes={0: (empty, empty), 1: (empty, empty)})
    assert torch.equal(tokens, expected)
    assert torch.equal(prompted.query(x), vit(x))


def test_prompts_sit_after_cls_with_the_cls_position_embedding():
    vit = tiny_vit().eval()
    prompted = PromptedViT(vit)
    x = torch.rand(2, 3, 28, 28)
    prompts = torch.randn(2, 5, 32)
    captured = {}
    handle = vit.blocks[0].register_forward_pre_hook(lambda m, a: captured.setdefault("tokens", a[0]))
    prompted.forward_tokens(x, prompts=prompts)
    handle.remove()
    tokens = captured["tokens"]
    assert tokens.shape == (2, 1 + 5 + 49, 32)
    torch.testing.assert_close(tokens[:, 1:6], prompts + vit.pos_embed[:, :1])


def test_prefix_attention_matches_a_hand_computation():
    vit = tiny_vit(depth=1).eval()
    prompted = PromptedViT(vit, prefix_blocks=[0])
    block = vit.blocks[0]
    attn = block.attn.attn
    h = torch.randn(2, 7, 32)
    pk, pv = torch.randn(2, 3, 32), torch.randn(2, 3, 32)
    block.attn.prefix = (pk, pv)
    out = block.attn(h)
    block.attn.prefix = None
    q, k, v = attn.qkv(h).reshape(2, 7, 3, 2, 16).permute(2, 0, 3, 1, 4)
    k = torch.cat([pk.reshape(2, 3, 2, 16).transpose(1, 2), k], 2)
    v = torch.cat([pv.reshape(2, 3, 2, 16).transpose(1, 2), v], 2)
    weights = torch.softmax(q @ k.transpose(-2, -1) * 16 ** -0.5, dim=-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 7, 32))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert prompted.forward_tokens(torch.rand(1, 3, 28, 28)).shape == (1, 50, 32)


def test_top_k_selection_and_key_term_by_hand():
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    query = torch.tensor([[2.0, 0.1], [0.0, 3.0]])
    idx = select_prompts(query, keys, top_k=2, batchwise=False)
    assert idx.tolist() == [[0, 2], [1, 2]]
    cos = lambda a, b: float(a @ b / a.norm() / b.norm())  # noqa: E731
    expected = (cos(query[0], keys[0]) + cos(query[0], keys[2]) + cos(query[1], keys[1]) + cos(query[1], keys[2])) / 2
    assert key_matching_similarity(query, keys, idx).item() == pytest.approx(expected, rel=1e-6)


def test_batchwise_vote_follows_pilot_tie_breaking():
    idx = torch.tensor([[3, 1], [3, 0], [1, 3]])  # counts: 3 -> 3, 1 -> 2, 0 -> 1
    assert batchwise_vote(idx, pool_size=5, top_k=2).tolist() == [[3, 1]] * 3
    tie = torch.tensor([[4, 2], [2, 4]])  # counts equal: topk over sorted unique ids [2, 4, pad...]
    unique, counts = torch.unique(tie, return_counts=True, sorted=True)
    padded = torch.cat([counts, torch.zeros(3, dtype=counts.dtype)])
    expected = torch.cat([unique, torch.full((3,), 2)])[torch.topk(padded, 2).indices]
    assert batchwise_vote(tie, pool_size=5, top_k=2)[0].tolist() == expected.tolist()


class CaptureLogits(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.train_logits = []

    def after_forward(self, strategy, **kwargs):
        self.train_logits.append((strategy.experience_index, strategy.mb_output.detach()))


@pytest.mark.parametrize("name", ["l2p", "coda_prompt"])
def test_training_masks_every_class_but_the_current_ones(name):
    probe = CaptureLogits()
    strategy, streams = build_strategy(name, plugins=[probe], vit=tiny_vit(depth=6))
    for t in range(2):
        strategy.train(streams.train_stream[t], eval_streams=[])
    for t, logits in probe.train_logits:
        lo, hi = 4 * t, 4 * t + 4
        assert torch.isfinite(logits[:, lo:hi]).all()
        assert torch.isneginf(logits[:, :lo]).all()
        if name == "l2p":
            assert torch.isneginf(logits[:, hi:]).all() and logits.shape[1] == 20
        else:
            assert logits.shape[1] == hi  # CODA slices future classes off


def _coda_after_first_experience(lr: float):
    strategy, streams = build_strategy("coda_prompt", pool_size=10, lr=lr, vit=tiny_vit(depth=6))
    strategy.train(streams.train_stream[0], eval_streams=[])
    return strategy, streams, {n: p.detach().clone() for n, p in strategy.model.pool.named_parameters()}


def test_coda_earlier_slices_stay_frozen_across_an_experience():
    strategy, streams, after_first = _coda_after_first_experience(lr=0.01)
    strategy.train(streams.train_stream[1], eval_streams=[])
    for name, p in strategy.model.pool.named_parameters():
        assert torch.equal(p.detach()[:2], after_first[name][:2]), name  # task 0's rows untouched
        assert not torch.equal(p.detach()[2:4], torch.zeros_like(p[2:4]))  # task 1's rows exist
        assert torch.count_nonzero(p.detach()[4:]) == 0  # later tasks' rows still empty


def test_coda_new_slice_starts_orthogonal_to_the_old_ones():
    # lr 0 keeps task 0's rows as initialised (orthonormal); with trained rows the reference's
    # classical Gram-Schmidt is only approximately orthogonal (spec: |dot| ~ 1e-3).
    strategy, streams, after_first = _coda_after_first_experience(lr=0.0)

    class CheckInit(SupervisedPlugin):
        def before_training_exp(self, s, **kwargs):
            for name, p in s.model.pool.named_parameters():
                rows = p.detach().flatten(1)
                assert torch.equal(rows[:2], after_first[name].flatten(1)[:2])
                assert (rows[:2] @ rows[2:4].T).abs().max() < 1e-5, name
                torch.testing.assert_close(rows[2:4].norm(dim=1), torch.ones(2))

    strategy.plugins.append(CheckInit())
    strategy.train(streams.train_stream[1], eval_streams=[])


def test_gram_schmidt_rows_are_orthonormal():
    torch.manual_seed(0)
    w = gram_schmidt_rows(torch.rand(6, 2, 5), 0, 3)
    rows = w.flatten(1)
    torch.testing.assert_close(rows[:3] @ rows[:3].T, torch.eye(3), atol=1e-5, rtol=0)
    assert torch.count_nonzero(rows[3:]) == 0
    w2 = gram_schmidt_rows(w, 3, 6)
    torch.testing.assert_close(w2.flatten(1) @ w2.flatten(1).T, torch.eye(6), atol=1e-5, rtol=0)


def test_coda_schedule():
    assert coda_cosine_factor(0, 20) == 1.0
    assert coda_cosine_factor(19, 20) == pytest.approx(0.0157, abs=1e-3)


@pytest.mark.parametrize("name", ["l2p", "coda_prompt"])
def test_cached_evaluation_equals_uncached(name):
    strategy, streams = build_strategy(name, vit=tiny_vit(depth=6))
    strategy.train(streams.train_stream[0], eval_streams=[])
    strategy.train(streams.train_stream[1], eval_streams=[])
    test = streams.seen_test_experience(1)
    outputs = []
    for cache in (False, True, True):
        if not cache:
            strategy.query_cache, saved = None, strategy.query_cache
        else:
            strategy.query_cache = saved

        class Keep(SupervisedPlugin):
            def after_eval_iteration(self, s, **kwargs):
                outputs[-1].append(s.mb_output.detach())

        outputs.append([])
        keeper = Keep()
        strategy.plugins.append(keeper)
        strategy.eval_shuffle_seed = 5
        strategy.eval(test)
        strategy.plugins.remove(keeper)
    uncached, first, second = (torch.cat(o) for o in outputs)
    assert saved.hits == len(test.dataset) and saved.misses == len(test.dataset)
    torch.testing.assert_close(first, uncached, atol=1e-5, rtol=1e-5)
    assert torch.equal(first.argmax(1), uncached.argmax(1)) and torch.equal(second, first)
