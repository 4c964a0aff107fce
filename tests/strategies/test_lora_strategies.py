"""InfLoRA and SD-LoRA inside Avalanche's training loop (spec ``more_baselines_lora.md`` §2.4, §3,
§5): what trains and what stays, the designed projections and the memory, merged inference, 40
tasks, the runner (``sweeps/run.py``) and checkpoint + resume."""

import copy

import pytest
import torch
from avalanche.core import SupervisedPlugin

from cl_bench.errors import RunInterrupted, StrategyArgumentError
from cl_bench.experiment import run_experiment
from cl_bench.strategies.inflora.model import design_down, dualgpm_update, energy_threshold
from helpers import QUICK_RUN, cli_args, plain_strategy, read_record, run_cli, tensor_benchmark, tiny_config, tiny_vit


def learned_parameters(model):
    return {name: p for name, p in model.named_parameters() if not name.startswith("vit.") or ".pairs." in name}


class SDLoRAWatch(SupervisedPlugin):
    """Checks, at every experience of the loop, what may train and that finished components stay."""

    def __init__(self):
        super().__init__()
        self.directions = {}  # task -> the unit direction of its Q/V updates when the task ended
        self.frozen = {}  # task -> its component's tensors once normalised
        self.start = {}
        self.checked = 0

    @staticmethod
    def pair_names(model, task):
        return {n for n in learned_parameters(model) if f".pairs.{task}." in n}

    def before_training_exp(self, strategy, **kwargs):
        model, t = strategy.model, strategy.task_index
        expected = self.pair_names(model, t) | {f"magnitudes.{i}" for i in range(t + 1)} | \
            {f"heads.heads.{t}.weight", f"heads.heads.{t}.bias"}
        assert {n for n, p in model.named_parameters() if p.requires_grad} == expected
        if t >= 1:  # the previous component became its direction, frozen from now on
            for w, wrapper in enumerate(model.wrappers):
                for slot in ("q", "v"):
                    adapter = getattr(wrapper.pairs[t - 1], slot)
                    assert torch.allclose(adapter.delta_weight(), self.directions[t - 1][w, slot], atol=1e-6)
            self.frozen[t - 1] = {n: p.detach().clone() for n, p in learned_parameters(model).items()
                                  if f".pairs.{t - 1}." in n}
        self.start = {n: p.detach().clone() for n, p in learned_parameters(model).items()}

    def after_training_exp(self, strategy, **kwargs):
        model, t = strategy.model, strategy.task_index
        now = learned_parameters(model)
        changed = {n for n, p in now.items() if not torch.equal(p, self.start[n])}
        old_magnitudes = {f"magnitudes.{i}" for i in range(t)}
        # old components and old head rows never move; every old task's magnitude does
        assert changed - self.pair_names(model, t) - {f"magnitudes.{t}", f"heads.heads.{t}.weight",
                                                       f"heads.heads.{t}.bias"} == old_magnitudes
        for task, tensors in self.frozen.items():
            assert all(torch.equal(now[n], v) for n, v in tensors.items()), task
        for w, wrapper in enumerate(model.wrappers):
            for slot in ("q", "v"):
                adapter = getattr(wrapper.pairs[t], slot)
                norms = adapter.up.weight.norm() * adapter.down.weight.norm()
                self.directions.setdefault(t, {})[w, slot] = (adapter.delta_weight() / norms).detach().clone()
        self.checked += 1


def test_sd_lora_runs_40_experiences_with_frozen_directions_and_only_magnitudes_training_for_old_tasks():
    benchmark = tensor_benchmark(train_per_class=2, test_per_class=1, class_order=list(range(80)), size=8)
    torch.manual_seed(0)
    watch = SDLoRAWatch()
    strategy = plain_strategy("sd_lora", tiny_vit(depth=2, dim=16, heads=2, img_size=8), n_classes=80,
                              n_experiences=40, rank=4, rank_reduction=True, rr_ranks=(3, 2), train_mb_size=4,
                              lr=0.05, plugins=[watch], evaluator=None)
    for experience in benchmark.train_stream:  # the official code stops at the 21st task
        strategy.train(experience, eval_streams=[])
    assert watch.checked == 40
    model = strategy.model
    assert len(model.magnitudes) == 40 and model.ranks == [4] * 4 + [3] * 4 + [2] * 32
    assert strategy.experience_report()["ranks"] == model.ranks
    x = torch.cat([exp.dataset[i][0][None] for exp in benchmark.test_stream for i in range(len(exp.dataset))])
    strategy.model.eval()
    with torch.no_grad():
        assert strategy.model(x).shape == (80, 80)  # every class of the 40 tasks, one pass


def gram_of(vit_features, blocks, data):
    """Mean of h hᵀ over every token of the attention inputs (LN1 outputs) of ``blocks``."""
    sums = [0.0] * len(blocks)
    seen = [0]

    def hook(index):
        def keep(module, inputs, output):
            h = output.reshape(-1, output.shape[-1]).double()
            sums[index] = sums[index] + h.T @ h
            if index == 0:
                seen[0] += h.shape[0]
        return keep

    handles = [block.norm1.register_forward_hook(hook(i)) for i, block in enumerate(blocks)]
    with torch.no_grad():
        vit_features(data)
    for handle in handles:
        handle.remove()
    return [(s / seen[0]).float() for s in sums]


def projector(rows):
    q, _ = torch.linalg.qr(rows.T.double())
    return q @ q.T


def test_inflora_designs_before_training_updates_the_memory_after_and_infers_with_merged_weights():
    benchmark = tensor_benchmark()
    vit = tiny_vit(depth=2)
    runs = {}
    for merge in (True, False):
        torch.manual_seed(0)
        strategy = plain_strategy("inflora", copy.deepcopy(vit), n_experiences=2, rank=4, merge=merge, evaluator=None)
        runs[merge] = strategy
        if not merge:  # the Gram matrix of experience 0's data seen by the plain ViT, before anything trains
            data = torch.stack([benchmark.train_stream[0].dataset[i][0] for i in range(len(benchmark.train_stream[0].dataset))])
            plain = copy.deepcopy(vit).eval()
            before = gram_of(plain, plain.blocks, data)
        strategy.train(benchmark.train_stream[0], eval_streams=[])
        if not merge:
            model = strategy.model
            for b, wrapper in enumerate(model.wrappers):  # the frozen down-projections: the design from `before`
                expected = projector(design_down(before[b], None, False, 4))
                assert torch.allclose(projector(wrapper.pairs[0].k.down.weight), expected, atol=1e-4)
                assert torch.equal(wrapper.pairs[0].k.down.weight, wrapper.pairs[0].v.down.weight)
            after = gram_of(model.features, model.vit.blocks, data)  # the trained pair active
            for b, memory in enumerate(model.memories):  # T = n_experiences = 2: eps_0 = 0.95
                basis, retain = dualgpm_update(None, False, after[b], energy_threshold(0, 2, 0.95, 1.0))
                assert bool(memory.retain) == retain and memory.size == basis.shape[1]
                assert torch.allclose(projector(memory.basis.T), projector(basis.T), atol=1e-4)
        strategy.train(benchmark.train_stream[1], eval_streams=[])
    merged, summed = runs[True].model, runs[False].model
    assert merged.n_pairs == 0 and all(w.folded is not None for w in merged.wrappers)  # inference: merged K, V
    assert summed.n_pairs == 2 and all(w.folded is None for w in summed.wrappers)
    assert runs[True].experience_report()["threshold"] == pytest.approx(0.975)
    x = torch.rand(5, 3, 28, 28)
    merged.eval(), summed.eval()
    with torch.no_grad():
        assert torch.allclose(merged(x), summed(x), atol=1e-4)
    with pytest.raises(StrategyArgumentError, match="n_experiences"):  # a third task would pass threshold_end
        runs[True].train(benchmark.train_stream[2], eval_streams=[])


def test_inflora_needs_the_stream_length_or_a_fixed_schedule():
    with pytest.raises(StrategyArgumentError, match="n_experiences"):
        plain_strategy("inflora", tiny_vit(), n_experiences=None)
    assert plain_strategy("inflora", tiny_vit(), n_experiences=None, threshold_tasks=7).schedule_tasks == 7
    with pytest.raises(StrategyArgumentError, match="rank"):
        plain_strategy("sd_lora", tiny_vit(dim=32), rank=33)


@pytest.mark.parametrize("name", ["inflora", "sd_lora"])
def test_runs_through_run_py_and_resumes_to_the_same_R(name, tmp_path, monkeypatch):
    import cl_bench.training.plugins as plugins

    tiny = {**QUICK_RUN, "pretrained": False, "threads": 1, "train_per_class": 4, "test_per_class": 2,
            "init_cls": 8, "inc_cls": 6}  # 3 experiences
    result = run_cli(*cli_args({"strategy": name, "bench": "digits_animals", "out_dir": str(tmp_path / "cli"),
                                "run_name": "r", **tiny, "pretrained": "false"}))
    assert result.returncode == 0, result.stderr
    uninterrupted = read_record(tmp_path / "cli" / "r")
    assert uninterrupted["status"] == "finished" and len(uninterrupted["R"]) == 3
    efficiency = uninterrupted["efficiency"]
    assert efficiency["vit_passes_per_image_last"] == 1 and efficiency["stored_parameters"] > 0

    original = plugins.RunGuard.raise_if_signalled

    def stop_after_second(self):
        if len(getattr(self, "_seen", [])) >= 2:
            raise RunInterrupted(15)
        original(self)

    def count(self, strategy, **kwargs):
        self._seen = getattr(self, "_seen", []) + [strategy.experience_index]

    config = tiny_config(name, out_dir=str(tmp_path / "cut"), run_name="r", **tiny)
    with monkeypatch.context() as patch:
        patch.setattr(plugins.RunGuard, "raise_if_signalled", stop_after_second)
        patch.setattr(plugins.RunGuard, "after_training_exp", count, raising=False)
        with pytest.raises(RunInterrupted):
            run_experiment(config, quiet=True)
    assert len(read_record(tmp_path / "cut" / "r")["R"]) == 1  # the checkpoint holds one experience
    run_experiment(tiny_config(name, out_dir=str(tmp_path / "cut"), run_name="r", resume=True, **tiny), quiet=True)
    resumed = read_record(tmp_path / "cut" / "r")
    assert resumed["status"] == "finished" and resumed["resumed"] == 1
    assert resumed["R"] == uninterrupted["R"]
