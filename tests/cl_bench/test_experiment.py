"""End to end on the offline bench: the first strategy, the run record, and the offline W&B run."""

import pytest

from cl_bench.errors import RunInterrupted
from cl_bench.experiment import resumed_threads_warning, run_experiment
from cl_bench.metrics import summarize
from helpers import read_record, tiny_config, wandb_history, wandb_run_facts


@pytest.fixture(scope="module")
def finished(tmp_path_factory, monkeypatch_module):
    out = tmp_path_factory.mktemp("runs")
    monkeypatch_module.setenv("WANDB_MODE", "offline")
    monkeypatch_module.setenv("WANDB_DATA_DIR", str(tmp_path_factory.mktemp("wandb_data")))  # artifact staging
    config = tiny_config("simple_cil", out_dir=str(out), run_name="simple", wandb_mode="auto", pretrained=True,
                         wandb_log_checkpoint=True)
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
    # the R table and its heatmap once, at the end, not re-created per experience
    assert [row["experience"] for row in history if row.get("eval/accuracy_matrix/_type") == "table-file"] == [4]
    assert [row["experience"] for row in history if row.get("eval/accuracy_matrix_heatmap/_type") == "image-file"] == [4]
    assert any("efficiency/eval_images_per_s" in row for row in history)
    assert config["strategy"] == "simple_cil" and config["seed"] == 1993
    assert summary["avg_accuracy"] == pytest.approx(record["metrics"]["avg_accuracy"])
    assert summary["R"] == record["R"]


def test_wandb_config_holds_the_environment_and_protocol_of_the_record(finished):
    run_dir, _ = finished
    record = read_record(run_dir)
    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    _, config, _ = wandb_history(run_file)
    env = config["environment"]
    for key in ("git_commit", "git_dirty", "packages", "python", "device"):
        assert env[key] == record["environment"][key], key
    assert env["packages"]["torch"] and env["packages"]["wandb"]
    assert config["weights"] == record["backbone"] and len(config["weights"]["sha256"]) == 64
    assert config["weights"]["tag"] == config["backbone"]
    protocol = config["protocol"]
    assert protocol["class_order"] == record["class_order"] and protocol["class_order_seed"] == 1993
    assert protocol["classes_per_experience"] == record["classes_per_experience"]
    assert config["config_digest"] == record["config_digest"]


def test_wandb_run_is_a_train_job_with_its_record_and_checkpoint_as_artifacts(finished):
    run_dir, config = finished
    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    facts = wandb_run_facts(run_file)
    assert facts["job_type"] == "train"
    by_type = {}
    for artifact in facts["artifacts"]:
        by_type.setdefault(artifact["type"], []).append(artifact)
    (record_artifact,) = by_type["run-record"]
    assert record_artifact["name"] == "record-simple"
    assert record_artifact["files"] == ["figures/accuracy_matrix.png", "figures/curves.png", "record.json"]
    (model,) = by_type["model"]  # the run asked for it; the option is off by default
    assert model["files"] == ["checkpoint.pt"]
    assert tiny_config("simple_cil").run.wandb_log_checkpoint is False


def test_tracker_refuses_an_unknown_job_type(tmp_path):
    from cl_bench.tracking import JOB_TYPES, WandbTracker

    assert JOB_TYPES == ("train", "efficiency", "pretrain")
    with pytest.raises(ValueError, match="job_type"):
        WandbTracker(tiny_config("simple_cil"), tmp_path, run_id=None, job_type="training")


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


def test_resuming_on_another_cpu_thread_count_is_warned_about():
    done = {"steps": [{}, {}], "environment": {"torch_threads": 1, "device": "cpu"}}
    warning = resumed_threads_warning(done, {"torch_threads": 2, "device": "cpu"})
    assert warning.startswith("resumed on 2 CPU threads after 2 experiences ran on 1") and "--threads 1" in warning
    assert resumed_threads_warning(done, {"torch_threads": 1, "device": "cpu"}) is None
    assert resumed_threads_warning(done, {"torch_threads": 2, "device": "cuda:0"}) is None  # GPU sums do not follow the CPU threads
    assert resumed_threads_warning({**done, "steps": []}, {"torch_threads": 2, "device": "cpu"}) is None  # nothing finished
    assert resumed_threads_warning({"steps": [{}]}, {"torch_threads": 2, "device": "cpu"}) is None  # an older record
