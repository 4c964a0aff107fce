"""End to end on the offline bench: the first strategy, the run record, and the offline W&B run."""

import pytest

from cl_bench.errors import RunInterrupted
from cl_bench.experiment import run_experiment
from cl_bench.metrics import summarize
from helpers import read_record, tiny_config, wandb_history


@pytest.fixture(scope="module")
def finished(tmp_path_factory, monkeypatch_module):
    out = tmp_path_factory.mktemp("runs")
    monkeypatch_module.setenv("WANDB_MODE", "offline")
    config = tiny_config("simple_cil", out_dir=str(out), run_name="simple", wandb_mode="auto", pretrained=True)
    run_experiment(config, quiet=True)
    return out / "simple", config


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_simple_cil_run_leaves_a_complete_record(finished):
    run_dir, config = finished
    record = read_record(run_dir)
    assert record["status"] == "finished" and record["error"] is None
    assert len(record["R"]) == 5 and [len(row) for row in record["R"]] == [1, 2, 3, 4, 5]
    assert record["classes_per_experience"] == [4] * 5 and record["test_sizes"] == [16] * 5
    assert sorted(record["class_order"]) == list(range(20)) and len(record["class_names"]) == 20
    expected = summarize(record["R"], record["test_sizes"], record["classes_per_experience"]).as_dict()
    assert record["metrics"].keys() == expected.keys()
    for key, value in expected.items():
        assert record["metrics"][key] == pytest.approx(value), key
    assert record["metrics"]["last_accuracy"] > 2 * record["metrics"]["chance_last_accuracy"]  # a pretrained backbone learns
    assert record["backbone"]["tag"] == config.run.backbone and len(record["backbone"]["sha256"]) == 64
    env = record["environment"]
    assert env["packages"]["torch"] == "2.14.1" and env["packages"]["avalanche-lib"] == "0.6.0"
    assert record["config"]["strategy"] == "simple_cil" and record["config_semantic"]["seed"] == 1993
    for step in record["steps"]:
        eff = step["efficiency"]
        assert eff["vit_passes_per_image"] == 1.0 and eff["eval_images_per_s"] > 0 and "peak_rss_mb" in eff
    assert record["efficiency"]["stored_parameters"] == 20 * 128  # the prototypes


def test_offline_wandb_run_holds_the_logged_metrics(finished):
    run_dir, _ = finished
    record = read_record(run_dir)
    assert record["wandb"]["mode"] == "offline" and record["wandb"]["run_id"]
    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    history, config, summary = wandb_history(run_file)
    accuracies = [row["eval/accuracy"] for row in history if "eval/accuracy" in row]
    assert accuracies == pytest.approx(record["metrics"]["accuracy_curve"])
    assert [row["experience"] for row in history if "eval/accuracy" in row] == list(range(5))
    assert any(row.get("eval/accuracy_matrix/_type") == "table-file" for row in history)
    assert any(row.get("eval/accuracy_matrix_heatmap/_type") == "image-file" for row in history)
    assert any("efficiency/eval_images_per_s" in row for row in history)
    assert config["strategy"] == "simple_cil" and config["seed"] == 1993
    assert summary["avg_accuracy"] == pytest.approx(record["metrics"]["avg_accuracy"])
    assert summary["R"] == record["R"]


def test_interrupted_run_leaves_a_partial_but_valid_record(tmp_path, monkeypatch):
    import cl_bench.training.plugins as plugins

    original = plugins.RunGuard.raise_if_signalled

    def stop_at_third(self):
        if len(getattr(self, "_seen", [])) >= 3:  # after the third experience trained
            raise RunInterrupted(15)
        original(self)

    def count(self, strategy, **kwargs):
        self._seen = getattr(self, "_seen", []) + [strategy.experience_index]

    monkeypatch.setattr(plugins.RunGuard, "raise_if_signalled", stop_at_third)
    monkeypatch.setattr(plugins.RunGuard, "after_training_exp", count, raising=False)
    with pytest.raises(RunInterrupted):
        run_experiment(tiny_config("simple_cil", out_dir=str(tmp_path), run_name="cut"), quiet=True)
    record = read_record(tmp_path / "cut")
    assert record["status"] == "interrupted" and len(record["R"]) == 2
    assert record["metrics"]["last_accuracy"] == pytest.approx(record["metrics"]["accuracy_curve"][-1])
