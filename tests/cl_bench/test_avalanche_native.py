"""Every strategy as a plain Avalanche strategy, outside the suite's runner: Avalanche benchmarks
with labels not renumbered, Avalanche's evaluator and metrics, no task identity at evaluation,
no change to the caller's model, and validation against the model actually given."""

import copy

import pytest
import torch
from avalanche.benchmarks import DatasetExperience
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
from avalanche.models import DynamicModule
from avalanche.training.plugins import EvaluationPlugin

from cl_bench.efficiency import BlockPassCounter
from cl_bench.errors import StrategyArgumentError
from cl_bench.registry import STRATEGIES
from cl_bench.training.evaluation import evaluate_seen_classes
from cl_bench.training.plugins import PredictionCollector
from helpers import PLAIN_CLASS_ORDER, plain_strategy, tensor_benchmark, tiny_config, tiny_vit

STREAM_ACCURACY = "Top1_Acc_Stream/eval_phase/test_stream"
#: L2P's batch-wise prompt vote makes a prediction depend on the rest of its test batch (the
#: reference's behaviour); comparisons of single images across batchings switch it off.
PER_IMAGE = {"l2p": {"batchwise_prompt_eval": False}}


def test_every_method_is_registered():
    assert {"cl_lora", "l2p", "coda_prompt", "ease", "simple_cil"} <= set(STRATEGIES.names())


def quiet_evaluator():
    return EvaluationPlugin(accuracy_metrics(experience=True, stream=True),
                            forgetting_metrics(experience=True, stream=True), loggers=[])


def merged(stream, count):
    data = stream[0].dataset
    for exp in stream[1:count]:
        data = data.concat(exp.dataset)
    return DatasetExperience(dataset=data, current_experience=count - 1)


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_runs_on_a_plain_avalanche_benchmark_without_task_identity(name):
    benchmark = tensor_benchmark()
    torch.manual_seed(0)
    collector = PredictionCollector()
    strategy = plain_strategy(name, tiny_vit(), evaluator=quiet_evaluator(), plugins=[collector],
                              **PER_IMAGE.get(name, {}))
    for t in range(2):
        strategy.train(benchmark.train_stream[t])
        results = strategy.eval(benchmark.test_stream[: t + 1])
    # Avalanche's own metrics come back from eval(), per experience and for the stream
    for key in (STREAM_ACCURACY, "Top1_Acc_Exp/eval_phase/test_stream/Exp000",
                "Top1_Acc_Exp/eval_phase/test_stream/Exp001", "StreamForgetting/eval_phase/test_stream"):
        assert key in results and 0.0 <= results[key] <= 1.0, (key, results)
    trained = set(PLAIN_CLASS_ORDER[:4])
    assert strategy.class_labels == sorted(PLAIN_CLASS_ORDER[:2]) + sorted(PLAIN_CLASS_ORDER[2:4])

    # experience 0 alone: each image gets the prediction it gets inside the pooled test set
    strategy.eval(benchmark.test_stream[0], shuffle=False)
    alone, targets = collector.result()
    strategy.evaluator.active = False  # a hand-merged experience has no origin stream for the metrics
    strategy.eval(merged(benchmark.test_stream, 2), shuffle=False)
    pooled, pooled_targets = collector.result()
    n = len(targets)
    assert torch.equal(pooled_targets[:n], targets)
    assert torch.equal(pooled[:n], alone)
    # outputs are indexed by label: only trained labels can be predicted, whatever experience is tested
    assert set(pooled.tolist()) <= trained


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_avalanche_stream_accuracy_equals_the_suites_pooled_accuracy(name):
    from helpers import TINY_VIT_OVERRIDES, fake_backbone

    from cl_bench.benches.streams import build_streams
    from cl_bench.seeding import seed_everything

    config = tiny_config(name, **{**TINY_VIT_OVERRIDES.get(name, {}), **PER_IMAGE.get(name, {})})
    seed_everything(config.run.seed)
    streams = build_streams(config)
    vit = fake_backbone(tiny_vit(depth=6)).vit
    collector = PredictionCollector()
    strategy = STRATEGIES[name].load_class().from_config(config, model=vit, device=torch.device("cpu"),
                                                          plugins=[collector], evaluator=quiet_evaluator())
    counter = BlockPassCounter(vit.blocks)
    for t in range(2):
        strategy.train(streams.train_stream[t], eval_streams=[])
        suite = evaluate_seen_classes(strategy, streams, t, collector=collector, counter=counter, shuffle_seed=t)
        pooled = sum(a * n for a, n in zip(suite.accuracy_per_experience, suite.test_sizes)) / suite.n_test
        results = strategy.eval(streams.test_stream[: t + 1])
        assert results[STREAM_ACCURACY] == pytest.approx(pooled, abs=1e-9)


def test_two_strategies_on_one_backbone_do_not_interfere():
    benchmark = tensor_benchmark()
    vit = tiny_vit()
    before = copy.deepcopy(vit.state_dict())
    torch.manual_seed(0)
    cl_lora = plain_strategy("cl_lora", vit, evaluator=None)
    l2p = plain_strategy("l2p", vit, evaluator=None)
    cl_lora.train(benchmark.train_stream[0])
    x = torch.rand(3, 3, 28, 28)
    # the caller's ViT is untouched: same tensors, stock timm blocks, and L2P's frozen query is its output
    assert all(torch.equal(before[k], v) for k, v in vit.state_dict().items()) and before.keys() == vit.state_dict().keys()
    assert all(type(block.attn.qkv) is torch.nn.Linear for block in vit.blocks)
    vit.eval()
    assert torch.equal(l2p.model.prompted.query(x), vit(x))
    # a ViT that carries another method's wrappers is refused, naming the argument
    with pytest.raises(StrategyArgumentError, match="'model'"):
        plain_strategy("ease", cl_lora.model.vit)
    # copy_model=False hands the model over instead
    handed = tiny_vit()
    assert plain_strategy("simple_cil", handed, copy_model=False).model.vit is handed


def test_validation_checks_the_model_and_experiences_given():
    vit = tiny_vit(depth=4)
    with pytest.raises(StrategyArgumentError, match="prompt_layers"):
        plain_strategy("coda_prompt", vit, prompt_layers=(0, 1, 2, 3, 4))
    with pytest.raises(StrategyArgumentError, match="shared_blocks"):
        plain_strategy("cl_lora", vit, shared_blocks=4)
    with pytest.raises(StrategyArgumentError, match="amp"):
        plain_strategy("ease", vit, amp="fp8")
    benchmark = tensor_benchmark()
    l2p = plain_strategy("l2p", vit, n_classes=2, evaluator=None)
    l2p.train(benchmark.train_stream[0])
    with pytest.raises(StrategyArgumentError, match="num_classes"):
        l2p.train(benchmark.train_stream[1])
    simple = plain_strategy("simple_cil", vit, evaluator=None)
    simple.train(benchmark.train_stream[0])
    with pytest.raises(StrategyArgumentError, match="learned in an earlier experience"):
        simple.train(benchmark.train_stream[0])


class AdaptationProbe(DynamicModule):
    """A dynamic module inside the strategy's model: Avalanche's model adaptation must reach it."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def adaptation(self, experience):
        self.seen.append(sorted(experience.classes_in_this_experience))

    def forward(self, x):
        return x


class LoaderProbe(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.loaders = []

    def before_training_epoch(self, strategy, **kwargs):
        self.loaders.append(strategy.dataloader)


def test_avalanche_model_adaptation_and_loader_arguments_are_honoured():
    benchmark = tensor_benchmark()
    probe, loaders = AdaptationProbe(), LoaderProbe()
    strategy = plain_strategy("ease", tiny_vit(), evaluator=None, plugins=[loaders])
    strategy.model.probe = probe

    def collate(items):
        return torch.utils.data.default_collate(items)

    strategy.train(benchmark.train_stream[0], num_workers=1, collate_fn=collate, pin_memory=False)
    assert probe.seen and probe.seen[0] == sorted(PLAIN_CLASS_ORDER[:2])
    loader = loaders.loaders[0]
    assert loader.num_workers == 1 and loader.collate_fn is collate and not loader.pin_memory


#: Joint retrains from its initial weights on every experience given so far: its state is the data
#: it has seen, not tensors alone (the runner trains it once, on the union, so its runs resume).
CHECKPOINTED = [n for n in STRATEGIES.names() if n != "joint"]


@pytest.mark.parametrize("name", CHECKPOINTED)
def test_a_restored_checkpoint_continues_exactly_like_the_strategy_it_came_from(name):
    """Everything a method learned is in ``learned_state`` (adapters injected into the ViT included),
    so a strategy rebuilt from it trains the next experience to the very same tensors."""
    from helpers import build_strategy

    from cl_bench import seeding

    def vit():
        torch.manual_seed(0)  # the same pretrained stand-in for both
        return tiny_vit(depth=6)

    first, streams = build_strategy(name, vit=vit())
    first.train(streams.train_stream[0], eval_streams=[])
    state, rng = copy.deepcopy(first.learned_state()), seeding.capture_rng_state()
    restored, _ = build_strategy(name, vit=vit())
    restored.load_learned_state(state)
    for strategy in (first, restored):
        seeding.restore_rng_state(rng)
        strategy.train(streams.train_stream[1], eval_streams=[])
    a, b = first.learned_state()["tensors"], restored.learned_state()["tensors"]
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
