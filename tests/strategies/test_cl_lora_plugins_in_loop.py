"""CL-LoRA's plugins inside the strategy's own training loop: the KD step of experience 1 carries a
real signal once the shared adapters have moved from their teacher, the distillation plugin steps
with reassigned gradients, and the growth plugin adds the orthogonality loss to the loss that is
back-propagated (spec §3, §4, §6.1, §11). The functions themselves are tested in test_cl_lora_maths.py."""

import torch
from avalanche.core import SupervisedPlugin

from helpers import build_strategy
from cl_bench.strategies.cl_lora.model import STUDENT, TEACHER
from cl_bench.strategies.cl_lora.plugins import AdapterGrowth, SharedAdapterDistillation

#: The iteration of experience 1 whose KD step is checked: from the second one on, student != teacher.
CHECKED_ITERATION = 2


def _after_experience_0(**overrides):
    torch.manual_seed(0)
    strategy, streams = build_strategy("cl_lora", batch_size=8, **overrides)
    strategy.train(streams.train_stream[0], eval_streams=[])
    return strategy, streams


def _insert(strategy, probe, *, before: type | None = None):
    """Put ``probe`` just before the plugin of type ``before`` (plugins run in list order), or last."""
    index = next(i for i, p in enumerate(strategy.plugins) if isinstance(p, before)) if before else len(strategy.plugins)
    strategy.plugins.insert(index, probe)


def _shared_up_weights(model, which):
    return [getattr(pair, name).up.weight for pair in model.shared_pairs(which) for name in ("q", "v")]


def test_kd_step_in_the_loop_has_a_real_signal_and_steps_with_reassigned_gradients():
    strategy, streams = _after_experience_0()
    distillation = next(p for p in strategy.plugins if isinstance(p, SharedAdapterDistillation))
    seen = {"raw_norms": [], "checked": False}

    class BeforeKD(SupervisedPlugin):
        """The raw KD gradient of the shared up-projections at this iteration, computed aside."""

        def before_update(self, s, **kwargs):
            model = s.model
            ups = _shared_up_weights(model, STUDENT)
            grads = torch.autograd.grad(distillation.loss(s), ups, retain_graph=True)
            seen["raw_norms"].append(float(torch.stack([g.norm() for g in grads]).norm()))
            if s.clock.train_epoch_iterations == CHECKED_ITERATION:
                moved = [float((a - b).detach().abs().max()) for a, b in zip(ups, _shared_up_weights(model, TEACHER))]
                assert max(moved) > 0  # the shared adapters have left their teacher
                # spec §3: w = d * n / sum(n), n the row norms of the teacher's up-projection
                weights = [model_w.norm(dim=1) * model_w.shape[0] / model_w.norm(dim=1).sum()
                           for model_w in (w.detach() for w in _shared_up_weights(model, TEACHER))]
                seen["expected"] = [g * w.unsqueeze(1) for g, w in zip(grads, weights)]
                seen["weights"] = weights

    class AfterKD(SupervisedPlugin):
        """The gradients the plugin stepped with are still in ``.grad`` after its step."""

        def before_update(self, s, **kwargs):
            if s.clock.train_epoch_iterations == CHECKED_ITERATION:
                for up, expected in zip(_shared_up_weights(s.model, STUDENT), seen["expected"]):
                    torch.testing.assert_close(up.grad, expected, atol=1e-8, rtol=1e-5)
                seen["checked"] = True
                s.stop_training()

    _insert(strategy, BeforeKD(), before=SharedAdapterDistillation)
    _insert(strategy, AfterKD())
    steps_before = distillation.steps_taken
    strategy.train(streams.train_stream[1], eval_streams=[])
    assert seen["checked"] and distillation.steps_taken - steps_before == CHECKED_ITERATION + 1
    first, checked = seen["raw_norms"][0], seen["raw_norms"][CHECKED_ITERATION]
    assert checked > 1e-6 and checked > 100 * first  # teacher == student at iteration 0: rounding noise only
    assert any(float((w - 1).abs().max()) > 1e-3 for w in seen["weights"])  # reassignment is not the identity


def test_orthogonality_loss_is_added_to_the_back_propagated_loss_in_the_loop():
    strategy, streams = _after_experience_0(orth_weight=1.0)
    seen = {}

    class BeforeGrowth(SupervisedPlugin):
        def before_backward(self, s, **kwargs):
            seen["loss_before"] = float(s.loss.detach())

    class AfterGrowth(SupervisedPlugin):
        def before_backward(self, s, **kwargs):
            seen["loss_after"] = float(s.loss.detach())
            old, current = [w.detach() for w in s.model.block_weights[:-1]], s.model.block_weights[-1].detach()
            unit = lambda w: w.flatten() / w.flatten().norm()  # noqa: E731  (eps 1e-8 is below the tolerance)
            seen["by_hand"] = sum(float(torch.dot(unit(w), unit(current)).abs()) for w in old) / len(old)
            seen["logged"] = float(s.loss_terms["orthogonality"])
            s.stop_training()

    _insert(strategy, BeforeGrowth(), before=AdapterGrowth)
    _insert(strategy, AfterGrowth())
    strategy.train(streams.train_stream[1], eval_streams=[])
    assert seen["by_hand"] > 0.1  # U(0.5, 1.5) block weights are far from orthogonal
    assert abs(seen["loss_after"] - seen["loss_before"] - seen["by_hand"]) < 1e-5  # weight 1.0 here
    assert abs(seen["logged"] - seen["by_hand"]) < 1e-6
