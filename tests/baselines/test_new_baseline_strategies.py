"""The DualPrompt, RanPAC, APER, Finetune and Joint strategies (issue 16): through the runner with
their efficiency figures, and each strategy's own behaviour in a plain Avalanche loop."""

import pytest
import torch

from cl_bench.baselines.ranpac.model import RIDGE_LAMBDAS, ridge_weights
from cl_bench.errors import StrategyArgumentError
from helpers import (PLAIN_CLASS_ORDER, TINY_VIT_OVERRIDES, cli_args, plain_strategy, read_record, run_cli,
                     tensor_benchmark, tiny_config, tiny_vit, QUICK_RUN)

#: ViT passes per test image: DualPrompt's query and prompted passes, APER's frozen and adapted branches.
VIT_PASSES = {"dual_prompt": 2, "ranpac": 1, "aper": 2, "finetune": 1}
#: Three experiences (B4-8-3) instead of the bench's five: the same code paths, less time.
SHORT_STREAM = {"init_cls": 4, "inc_cls": 8}
#: The reference rows train a linear probe here (the cheapest trainable part; the runner's path is the same).
CHEAP = {"finetune": {"trainable": "head"}, "joint": {"trainable": "head"}}


@pytest.mark.parametrize("name", sorted(VIT_PASSES))
def test_runs_through_the_runner_with_efficiency_figures(name, tmp_path):
    from cl_bench.experiment import run_experiment

    config = tiny_config(name, out_dir=str(tmp_path), **SHORT_STREAM, **CHEAP.get(name, {}),
                         **TINY_VIT_OVERRIDES.get(name, {}))
    record = run_experiment(config, quiet=True).data
    assert record["status"] == "finished" and [len(row) for row in record["R"]] == [1, 2, 3]
    efficiency = record["efficiency"]
    trainable = efficiency["trainable_parameters_per_experience"]
    assert efficiency["vit_passes_per_image_last"] == VIT_PASSES[name]
    assert efficiency["stored_parameters"] > 0 and efficiency["eval_images_per_s_last"] > 0
    if name in ("ranpac", "aper"):  # only the first experience trains
        assert trainable[0] > 0 and trainable[1:] == [0, 0]
        assert record["steps"][0]["efficiency"]["train_images_per_s"] > 0
        assert all(step["efficiency"]["train_images_per_s"] is None for step in record["steps"][1:])
    else:
        assert all(count > 0 for count in trainable)
    if name == "ranpac":
        assert all(step["method"]["ridge_lambda"] in RIDGE_LAMBDAS for step in record["steps"])
    if name == "dual_prompt":  # every test image chose one trained or untrained key
        assert sum(record["steps"][-1]["method"]["eval_prompt_usage"]) == record["steps"][-1]["n_test"]


def test_joint_runs_through_run_py_trained_once_and_scored_per_experience(tmp_path):
    overrides = {**QUICK_RUN, **SHORT_STREAM, **CHEAP["joint"], "pretrained": False, "out_dir": tmp_path, "run_name": "joint"}
    result = run_cli("--strategy=joint", "--bench=digits_animals", *cli_args(overrides))
    assert result.returncode == 0, result.stderr[-2000:]
    record = read_record(tmp_path / "joint")
    steps = record["steps"]
    assert [len(row) for row in record["R"]] == [1, 2, 3]
    assert [step["method"]["scored_experiences"] for step in steps] == [1, 2, 3]
    assert all(step["method"]["trained_classes"] == 20 for step in steps)  # every class from the first step
    # trained once, at the first experience: later steps train nothing and say so
    assert steps[0]["efficiency"]["trainable_parameters"] > 0 and steps[0]["efficiency"]["train_images_per_s"] > 0
    assert all(s["efficiency"]["trainable_parameters"] == 0 and s["efficiency"]["train_images_per_s"] is None
               for s in steps[1:])


def test_joint_trains_once_on_the_union_and_scores_the_classes_asked():
    benchmark = tensor_benchmark()
    torch.manual_seed(0)
    joint = plain_strategy("joint", tiny_vit(), evaluator=None, trainable="head", train_epochs=2)
    iterations = []
    joint.train(benchmark.train_stream[:3])
    iterations.append(joint.clock.train_iterations)
    assert joint.class_labels == sorted(PLAIN_CLASS_ORDER[:2]) + sorted(PLAIN_CLASS_ORDER[2:4]) + sorted(PLAIN_CLASS_ORDER[4:6])
    assert joint.task_offsets == [0, 2, 4, 6]
    assert iterations == [2 * 5]  # 2 epochs of the 36 images of three experiences in batches of 8 (5 batches)
    from cl_bench.training.plugins import PredictionCollector

    collector = PredictionCollector()
    joint.plugins.append(collector)
    joint.score_experiences(1)
    joint.eval(benchmark.test_stream[:3])
    predictions, _ = collector.result()
    assert set(predictions.tolist()) <= set(PLAIN_CLASS_ORDER[:2])  # only the first experience's classes compete
    with pytest.raises(ValueError):
        joint.score_experiences(4)


def test_joint_trains_again_from_its_initial_weights_on_the_larger_union():
    benchmark = tensor_benchmark()
    joint = plain_strategy("joint", tiny_vit(), evaluator=None, trainable="adapter")
    initial = {n: p.detach().clone() for n, p in joint.model.named_parameters() if p.requires_grad}
    joint.train(benchmark.train_stream[0])
    seen = []  # the trainable weights at the second call's first forward pass
    original = joint.model.head

    def check(*_):
        if not seen:
            seen.append({n: p.detach().clone() for n, p in joint.model.named_parameters() if n in initial})

    hook = joint.model.vit.register_forward_pre_hook(check)
    joint.train(benchmark.train_stream[1])
    hook.remove()
    assert all(torch.equal(seen[0][n], initial[n]) for n in initial)
    assert joint.model.head is not original and joint.model.head.out_features == 4


@pytest.mark.parametrize("name", ["aper", "ranpac"])
def test_the_petl_module_trains_in_the_first_experience_only(name):
    benchmark = tensor_benchmark()
    torch.manual_seed(0)
    strategy = plain_strategy(name, tiny_vit(), evaluator=None)
    petl = strategy.model.first_session.petl_parameters
    before = [p.detach().clone() for p in petl]
    strategy.train(benchmark.train_stream[0])
    after_first = [p.detach().clone() for p in petl]
    assert any(not torch.equal(a, b) for a, b in zip(after_first, before))  # the adapter learned
    for t in (1, 2):
        strategy.train(benchmark.train_stream[t])
        assert strategy.trainable_count == 0 and strategy.clock.train_exp_epochs == 0
    assert all(torch.equal(p, a) and not p.requires_grad for p, a in zip(petl, after_first))
    assert strategy.model.first_session.head is None  # the first-session head is thrown away
    if name == "aper":
        assert strategy.model.prototypes.weight.shape == (6, 2 * strategy.model.first_session.vit.embed_dim)
    else:
        classifier = strategy.model.classifier
        assert classifier.weight.shape == (6, 128) and len(classifier.lambdas) == 3
        torch.testing.assert_close(classifier.weight, ridge_weights(classifier.gram, classifier.cross, classifier.lambdas[-1]))


def test_dual_prompt_trains_the_true_tasks_e_prompt_and_refuses_a_small_pool():
    benchmark = tensor_benchmark()
    torch.manual_seed(0)
    strategy = plain_strategy("dual_prompt", tiny_vit(), evaluator=None)
    initial = strategy.model.e_prompt.detach().clone()
    strategy.train(benchmark.train_stream[0])
    after_first = strategy.model.e_prompt.detach().clone()
    assert not torch.equal(after_first[:, :, 0], initial[:, :, 0])
    assert torch.equal(after_first[:, :, 1:], initial[:, :, 1:])  # other entries get no gradient
    strategy.train(benchmark.train_stream[1])
    e = strategy.model.e_prompt.detach()
    assert torch.equal(e[:, :, 0], after_first[:, :, 0]) and torch.equal(e[:, :, 2:], initial[:, :, 2:])
    assert not torch.equal(e[:, :, 1], initial[:, :, 1])  # started as a copy of entry 0, then trained
    small = plain_strategy("dual_prompt", tiny_vit(), evaluator=None, pool_size=1)
    small.train(benchmark.train_stream[0])
    with pytest.raises(StrategyArgumentError, match="pool_size"):
        small.train(benchmark.train_stream[1])
