"""Measured branch batching (cl_bench.models.branch_batching): the choice follows the measured
costs (a fake clock: no timed test), is cached in the process and in a file, leaves the random
streams alone, is recorded, and never changes CL-LoRA's or EASE's outputs."""

import json

import pytest
import torch

from cl_bench.models import branch_batching as bb
from cl_bench.models.branch_batching import BranchBatching, measure_sequences_per_pass
from cl_bench.baselines.ease.model import EaseNet
from helpers import tiny_cl_lora_net, tiny_vit

CPU = torch.device("cpu")


class FakeClock:
    """Each pass of k branches advances the clock by ``cost(k)`` seconds."""

    def __init__(self, cost):
        self.now, self.cost, self.passes = 0.0, cost, []

    def __call__(self):
        return self.now

    def make_pass(self, k):
        def run():
            self.passes.append(k)
            self.now += self.cost(k)
        return run


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CL_BENCH_CACHE_DIR", str(tmp_path))
    bb.clear_process_cache()
    yield
    bb.clear_process_cache()


@pytest.mark.parametrize("cost, expected", [
    (lambda k: 0.01 + 0.001 * k, 8 * 4),  # a fixed cost per pass dominates: batch 8 branches
    (lambda k: 0.1 * k ** 1.5, 4),       # batching costs more per sequence: one branch per pass
    (lambda k: 0.1 * k, 4),              # equal per sequence: the smallest within the tolerance
])
def test_the_choice_follows_the_measured_cost(cost, expected):
    clock = FakeClock(cost)
    chosen, timings = measure_sequences_per_pass(4, clock.make_pass, CPU, timer=clock)
    assert chosen == expected
    assert set(timings) <= {"4", "8", "16", "32"} and "4" in timings and "8" in timings


def test_the_search_stops_when_batching_stops_paying_and_respects_the_cap():
    clock = FakeClock(lambda k: 0.1 * k ** 1.5)
    measure_sequences_per_pass(4, clock.make_pass, CPU, timer=clock)
    assert max(clock.passes) == 2  # k=4 and 8 never tried once 2 was slower per sequence
    clock = FakeClock(lambda k: 0.01)
    chosen, timings = measure_sequences_per_pass(300, clock.make_pass, CPU, timer=clock, cap=700)
    assert chosen == 600 and max(clock.passes) == 2


def test_requested_values_are_used_as_given_and_never_measured():
    batching = BranchBatching(8, "cpu")
    assert batching.branches_per_pass(4, 5, lambda: "never", lambda k: pytest.fail("measured")) == 2
    assert batching.report() == {"sequences_per_pass": 8, "source": "requested", "key": None, "seconds_per_sequence": {}}


def test_measured_once_then_cached_in_the_process_and_in_the_file(tmp_path):
    clock = FakeClock(lambda k: 0.01 + 0.001 * k)
    first = BranchBatching(0, "cpu", timer=clock)
    assert first.report()["source"].startswith("not chosen")
    assert first.branches_per_pass(4, 1, lambda: "shape", clock.make_pass) == 1  # one branch: nothing to choose
    assert first.branches_per_pass(4, 3, lambda: "shape", clock.make_pass) == 8
    assert first.report()["source"] == "measured" and first.report()["sequences_per_pass"] == 32
    passes = len(clock.passes)
    second = BranchBatching(0, "cpu", timer=clock)
    assert second.branches_per_pass(4, 3, lambda: "shape", clock.make_pass) == 8
    assert second.report()["source"] == "process cache" and len(clock.passes) == passes
    stored = json.loads((tmp_path / "branch_batching.json").read_text())
    assert [entry["sequences_per_pass"] for entry in stored.values()] == [32]
    bb.clear_process_cache()  # a new process: the file answers
    third = BranchBatching(0, "cpu", timer=clock)
    assert third.branches_per_pass(4, 3, lambda: "shape", clock.make_pass) == 8
    assert third.report()["source"] == "cache file" and len(clock.passes) == passes
    # another batch is another key: measured again
    assert BranchBatching(0, "cpu", timer=clock).branches_per_pass(5, 3, lambda: "shape", clock.make_pass) == 8
    assert len(clock.passes) > passes


def test_an_unreadable_cache_file_means_measuring_again(tmp_path):
    (tmp_path / "branch_batching.json").write_text("{not json")
    clock = FakeClock(lambda k: 0.1 * k ** 1.5)
    batching = BranchBatching(0, "cpu", timer=clock)
    assert batching.branches_per_pass(4, 3, lambda: "shape", clock.make_pass) == 1
    assert batching.report()["source"] == "measured"


def test_measuring_leaves_the_random_streams_alone():
    def make_pass(k):
        return lambda: torch.nn.functional.dropout(torch.ones(8), 0.5, training=True)
    torch.manual_seed(3)
    state = torch.random.get_rng_state()
    measure_sequences_per_pass(4, make_pass, CPU)
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("sequences", [0, 1024])
def test_cl_lora_predictions_do_not_depend_on_the_batching(sequences):
    net = tiny_cl_lora_net(n_tasks=4)
    x = torch.rand(5, 3, 28, 28)
    with torch.no_grad():
        net.max_branch_sequences = 5  # one branch per pass
        one = net.predict(x)
        net.max_branch_sequences = sequences
        chosen = net.predict(x)
    assert net.batching.sequences_per_pass is not None
    torch.testing.assert_close(chosen, one, atol=1e-6, rtol=1e-6)
    assert torch.equal(chosen.argmax(1), one.argmax(1))


@pytest.mark.parametrize("sequences", [0, 1024])
def test_ease_features_do_not_depend_on_the_batching(sequences):
    torch.manual_seed(0)
    net = EaseNet(tiny_vit(depth=3), bottleneck=4, scale=0.1, dropout=0.1, max_batch_sequences=sequences)
    for _ in range(3):
        net.add_adapter_set()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    net.eval()
    x = torch.rand(4, 3, 28, 28)
    with torch.no_grad():
        batched, per_set = net.features(x, [0, 1, 2]), net.features(x, [0, 1, 2], batched=False)
    torch.testing.assert_close(batched, per_set, atol=1e-6, rtol=1e-6)


def test_the_choice_is_in_the_experience_report():
    from cl_bench.baselines.ease.strategy import EASE
    from cl_bench.strategies.cl_lora.strategy import CLLoRA

    x = torch.rand(4, 3, 28, 28)
    cl_lora, ease = CLLoRA(model=tiny_vit(depth=2), device="cpu"), EASE(model=tiny_vit(depth=2), device="cpu")
    for strategy in (cl_lora, ease):
        assert strategy.experience_report()["branch_batching"]["source"].startswith("not chosen")
    cl_lora.model.add_branch()
    for _ in range(2):
        ease.model.add_adapter_set()
    with torch.no_grad():
        cl_lora.model.branch_features(x, [0, 1])
        ease.model.eval().features(x, [0, 1])
    for strategy in (cl_lora, ease):
        report = strategy.experience_report()["branch_batching"]
        assert report["source"] == "measured" and report["sequences_per_pass"] >= 4
        assert "batch 4" in report["key"] and "4" in report["seconds_per_sequence"]


def test_block_passes_of_the_measurement_are_not_counted_as_the_methods_cost():
    from cl_bench.efficiency import BlockPassCounter

    net = tiny_cl_lora_net(n_tasks=2)
    net.max_branch_sequences = 0
    counter = BlockPassCounter(net.vit.blocks)
    x = torch.rand(3, 3, 28, 28)
    with torch.no_grad(), counter.counting():
        net.predict(x)
    assert net.batching.report()["source"] == "measured"
    assert counter.sequences == 3 * (2 + 2 * 2)  # shared half once, then each of 2 branches: 2 blocks each
