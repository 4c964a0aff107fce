"""Efficiency instrumentation counts what the code really runs, and the benchmark runs end to end."""

import json
import subprocess
import sys

import pytest

from cl_bench.efficiency import BlockPassCounter
from cl_bench.training.evaluation import evaluate_seen_classes
from cl_bench.training.plugins import PredictionCollector
from helpers import REPO, build_strategy, tiny_vit


def passes_after(name, experiences, **overrides):
    collector = PredictionCollector()
    vit = tiny_vit(depth=12, dim=16, heads=2)
    strategy, streams = build_strategy(name, vit=vit, plugins=[collector], **overrides)
    counter = BlockPassCounter(vit.blocks)
    counts = []
    for t in range(experiences):
        strategy.train(streams.train_stream[t], eval_streams=[])
        counts.append(evaluate_seen_classes(strategy, streams, t, collector=collector, counter=counter, shuffle_seed=0))
    return counts


def test_cl_lora_runs_the_shared_half_once_and_one_second_half_per_task():
    results = passes_after("cl_lora", 3)
    assert [r.block_passes_per_image for r in results] == [6 + 6 * 1, 6 + 6 * 2, 6 + 6 * 3]


def test_ease_runs_one_pass_per_adapter_set():
    results = passes_after("ease", 3)
    assert [r.vit_passes_per_image for r in results] == [1, 2, 3]


@pytest.mark.parametrize("name", ["l2p", "coda_prompt"])
def test_prompt_methods_run_two_passes_per_new_image(name):
    (first, second) = passes_after(name, 2, query_cache=False)
    assert first.vit_passes_per_image == second.vit_passes_per_image == 2
    cached = passes_after(name, 2)  # the second evaluation re-sees experience 0's images
    assert cached[0].vit_passes_per_image == 2
    assert cached[1].vit_passes_per_image == pytest.approx(1.5)  # half the images are new


def test_a_run_reports_the_uncached_cost_as_the_methods_and_the_cache_as_harness(tmp_path_factory):
    """L2P with its query cache on (the session's shared tiny runs): the recorded cost is 2 passes per
    new image, measured with the cache bypassed at the last experience; the cache's figures are the
    harness's."""
    from helpers import read_record, tiny_run_records

    (run_dir,) = [p.parent for p in tiny_run_records(tmp_path_factory).glob("l2p-*/record.json")
                  if read_record(p.parent)["seed"] == 0]
    record = read_record(run_dir)
    steps = [step["efficiency"] for step in record["steps"]]
    first, last = steps[0], steps[-1]
    assert first["query_cache_hits"] == 0 and first["vit_passes_per_image"] == first["harness_vit_passes_per_image"] == 2
    assert last["query_cache_hits"] == 64 and last["harness_vit_passes_per_image"] == pytest.approx(1.2)  # 16 of 80 new
    assert last["vit_passes_per_image"] == 2 and last["eval_images_per_s"] > 0
    assert all(step["vit_passes_per_image"] is None for step in steps[1:-1])  # cached passes: not a method cost
    assert last["uncached_prediction_agreement"] == 1.0  # the recorded predictions are the cached pass's; both agree
    summary = record["efficiency"]
    assert summary["vit_passes_per_image_last"] == 2 and summary["eval_images_per_s_last"] == last["eval_images_per_s"]
    assert summary["harness_eval_speedup_last"] == pytest.approx(last["harness_eval_images_per_s"] / last["eval_images_per_s"])


def test_simple_cil_runs_one_pass():
    assert [r.vit_passes_per_image for r in passes_after("simple_cil", 2)] == [1, 1]


@pytest.mark.slow
def test_efficiency_benchmark_runs_end_to_end_at_a_tiny_size(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "sweeps" / "bench_efficiency.py"), "--experiences", "3", "--repeats", "1",
         "--train-per-experience", "40", "--eval-images", "20", "--threads", "1", "--out", str(tmp_path),
         "--strategies", "cl_lora,ease,l2p,coda_prompt,simple_cil"],  # the fast paths it checks; each method's rows are alike
        capture_output=True, text=True, cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "efficiency.json").read_text())
    assert set(report["strategies"]) >= {"cl_lora", "ease", "l2p", "coda_prompt", "simple_cil"}
    assert report["strategies"]["cl_lora"]["inference"]["1"]["block_passes_per_image"] == 3 + 3  # the 6-block ViT, 1 task
    assert report["machine_matmul_flops"] > 0 and "overhead_fraction" in report["harness"]
    assert report["strategies"]["cl_lora"]["train_images_per_s"]["median"] > 0  # the third experience is timed
    assert any(name.startswith("cl_lora training: KD student") for name in report["fast_paths"])
    assert (tmp_path / "efficiency.md").read_text().startswith("Backbone")


def test_paper_shapes_sets_vit_b_and_a_small_batch_on_cpu_and_the_papers_on_gpu():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_efficiency", REPO / "sweeps" / "bench_efficiency.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cpu = bench.parse(["--paper_shapes"])
    assert (cpu.backbone, cpu.pretrained, cpu.strategies) == ("vit_base_patch16_224.augreg_in21k", "false", "cl_lora,ease")
    assert (cpu.batch_size, cpu.eval_batch_size, cpu.stages, cpu.harness) == (4, 4, "2,6,10", "false")
    assert bench.parse(["--paper_shapes", "--device", "cuda"]).batch_size == 64
    given = bench.parse(["--paper_shapes", "--batch-size", "2", "--stages=2,3"])  # explicit options win
    assert (given.batch_size, given.stages, given.eval_batch_size) == (2, "2,3", 4)
    assert bench.parse([]).backbone == "vit_mini_patch4_28.fmnist_letters"
