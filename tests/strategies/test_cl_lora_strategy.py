"""CL-LoRA's lifecycle as an Avalanche strategy: trainable sets, heads, optimizer steps, the KD
fast path, plugins that switch off, and learning on the offline bench."""

import copy
import functools

import pytest
import torch
from avalanche.core import SupervisedPlugin

from cl_bench.registry import STRATEGIES
from helpers import build_strategy
from cl_bench.strategies.cl_lora.plugins import AdapterGrowth, SharedAdapterDistillation
from cl_bench.strategies.cl_lora.strategy import CLLoRA


class Snapshot(SupervisedPlugin):
    """Records the trainable tensors and optimizer steps of every experience."""

    def __init__(self):
        super().__init__()
        self.trainable = {}
        self.head_classes = {}
        self.frozen_after = {}
        self.steps = {}
        self.iterations = {}
        self._handle = None

    def before_training_exp(self, strategy, **kwargs):
        t = strategy.experience_index
        self.trainable[t] = {n for n, p in strategy.model.named_parameters() if p.requires_grad}
        self.head_classes[t] = strategy.model.proxy_head.weight.shape[0]
        in_optimizer = {id(p) for g in strategy.optimizer.param_groups for p in g["params"]}
        assert in_optimizer == {id(p) for p in strategy.model.parameters() if p.requires_grad}
        self.steps[t], self.iterations[t] = 0, 0
        self._handle = strategy.optimizer.register_step_post_hook(lambda *a: self._count(t))

    def _count(self, t):
        self.steps[t] += 1

    def after_training_iteration(self, strategy, **kwargs):
        self.iterations[strategy.experience_index] += 1

    def after_training_exp(self, strategy, **kwargs):
        self._handle.remove()
        self.frozen_after[strategy.experience_index] = {n for n, p in strategy.model.named_parameters() if p.requires_grad}


def test_registered_with_two_visible_plugins():
    strategy, _ = build_strategy("cl_lora")
    assert isinstance(strategy, CLLoRA) and STRATEGIES["cl_lora"].load_class() is CLLoRA
    kinds = {type(p) for p in strategy.plugins}
    assert {SharedAdapterDistillation, AdapterGrowth} <= kinds
    bare, _ = build_strategy("cl_lora", distillation=False, adapter_growth=False)
    assert not {SharedAdapterDistillation, AdapterGrowth} & {type(p) for p in bare.plugins}


def test_lifecycle_trainable_sets_heads_steps_and_teacher():
    probe = Snapshot()
    strategy, streams = build_strategy("cl_lora", plugins=[probe], init_cls=4, inc_cls=4)
    model = strategy.model
    for t in range(2):
        strategy.train(streams.train_stream[t], eval_streams=[])
        # the training head covered only this experience's classes, and is dropped afterwards
        assert probe.head_classes[t] == 4 and model.proxy_head is None
        # frozen after the experience; prototypes of the experience's classes appended
        assert probe.frozen_after[t] == set() and not any(p.requires_grad for p in model.parameters())
        assert len(model.prototypes) == 4 * (t + 1)

    shared_up = {f"vit.blocks.{b}.attn.qkv.pairs.0.{w}.up.weight" for b in range(2) for w in "qv"}
    for t in range(2):
        specific = {f"vit.blocks.{b}.attn.qkv.pairs.{t}.{w}.{k}.weight" for b in (2, 3) for w in "qv" for k in ("down", "up")}
        head = {"proxy_head.weight", "proxy_head.sigma"}
        assert probe.trainable[t] == shared_up | specific | {f"block_weights.{t}"} | head
    # one optimizer step per iteration in the first experience, two afterwards
    assert probe.steps[0] == probe.iterations[0] > 0
    assert probe.steps[1] == 2 * probe.iterations[1] > 0
    # the teacher of experience 1 is the shared adapters as they were after experience 0
    assert model.has_teacher and model.n_branches == 2 and model.task_branch == [0, 1]


def test_prototypes_are_class_means_of_the_experience_branch():
    strategy, streams = build_strategy("cl_lora")
    strategy.train(streams.train_stream[0], eval_streams=[])
    model = strategy.model.eval()
    data = streams.train_stream[0].dataset.eval()
    xs = torch.stack([data[i][0] for i in range(len(data))])
    ys = torch.tensor([data[i][1] for i in range(len(data))])
    with torch.no_grad():
        features = model.full_pass(xs, 0)
    expected = torch.stack([features[ys == c].mean(0) for c in range(4)])
    torch.testing.assert_close(model.prototypes.weight, expected, atol=1e-5, rtol=1e-5)


@functools.lru_cache(maxsize=None)
def _kd_iterations(reuse: bool, iterations: int = 4):
    """Train experience 0, then a few iterations of experience 1 (from the second one the student
    differs from its teacher, so KD carries signal: spec §11); returns the tensors, the patch
    embeddings computed per iteration and the KD steps taken (shared by the tests below)."""
    torch.manual_seed(0)
    strategy, streams = build_strategy("cl_lora", kd_reuse_shared_forward=reuse, batch_size=8)
    strategy.train(streams.train_stream[0], eval_streams=[])
    strategy.train_epochs = 1
    embeddings = []

    window = []

    class StopAfter(SupervisedPlugin):
        def before_training_iteration(self, s, **kwargs):
            window.append(True)

        def after_training_iteration(self, s, **kwargs):
            window.clear()
            if s.clock.train_epoch_iterations + 1 >= iterations:
                s.stop_training()

    model = strategy.model
    embed = model.embed
    model.embed = lambda x: (embeddings.append(1) if window else None) or embed(x)  # counted in iterations only
    distillation = next(p for p in strategy.plugins if isinstance(p, SharedAdapterDistillation))
    steps = distillation.steps_taken
    strategy.plugins.append(StopAfter())
    torch.manual_seed(1)
    strategy.train(streams.train_stream[1], eval_streams=[])
    tensors = {n: p.detach().clone() for n, p in model.named_parameters()}
    return tensors, len(embeddings), distillation.steps_taken - steps


def test_kd_on_the_main_forwards_shared_half_gives_the_reference_updates():
    (fast, _, _), (reference, _, _) = _kd_iterations(True), _kd_iterations(False)
    assert fast.keys() == reference.keys()
    for name in fast:
        torch.testing.assert_close(fast[name], reference[name], atol=1e-6, rtol=1e-6, msg=name)


def test_the_optimised_step_gives_the_reference_style_parameters_bit_for_bit():
    """Student from the main forward, teacher from its embedding, KD loss checked with the CE loss:
    over the KD steps of several iterations, every parameter equals the reference-style step's exactly."""
    (fast, fast_embeddings, fast_steps), (reference, reference_embeddings, reference_steps) = (
        _kd_iterations(True), _kd_iterations(False))
    assert fast_steps == reference_steps >= 3
    # what is shared: one patch embedding per iteration instead of three (main, student, teacher)
    assert 3 * fast_embeddings == reference_embeddings > 0
    moved = [n for n in fast if ".pairs.0." in n and ".up." in n and fast[n].abs().sum() > 0]
    assert moved  # the shared up-projections were trained, so the comparison carries signal
    for name in fast:
        assert torch.equal(fast[name], reference[name]), name


def test_kd_step_moves_only_shared_up_projections_and_the_head():
    strategy, streams = build_strategy("cl_lora", batch_size=32)
    strategy.train(streams.train_stream[0], eval_streams=[])
    strategy.train_epochs = 1
    moved = {}

    class Watch(SupervisedPlugin):
        def before_update(self, s, **kwargs):
            # runs after the distillation plugin (plugins run in order): compare with the start
            for n, p in s.model.named_parameters():
                if not torch.equal(p, start[n]):
                    moved[n] = True
            s.stop_training()

    strategy.plugins.append(Watch())
    start = {}

    class Remember(SupervisedPlugin):
        def before_training_iteration(self, s, **kwargs):
            start.update({n: p.detach().clone() for n, p in s.model.named_parameters()})

    strategy.plugins.insert(0, Remember())
    strategy.train(streams.train_stream[1], eval_streams=[])
    assert moved and all(".pairs.0." in n and ".up." in n or n.startswith("proxy_head") for n in moved), moved
