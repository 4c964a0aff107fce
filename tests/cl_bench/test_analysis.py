"""cl_bench.analysis: statistics against scipy on known samples, the two loaders against each other
on real tiny runs, and the tables the notebooks and the report show."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from cl_bench import analysis, plots
from helpers import (
    REPO, TINY_RECORD_SEEDS, TINY_RECORD_STRATEGIES, FakeWandbRun, tiny_run_records, wandb_export, write_fake_record,
)

#: Final accuracies per seed of three fake methods; method "c" lacks seed 4, so pairs with it use 4 seeds.
KNOWN_LAST = {
    "a": [0.61, 0.64, 0.58, 0.70, 0.66],
    "b": [0.55, 0.63, 0.52, 0.64, 0.60],
    "c": [0.62, 0.60, 0.59, 0.71],
}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return tiny_run_records(tmp_path_factory)


def constant_R(accuracy: float, experiences: int = 2) -> list[list[float]]:
    """An accuracy matrix whose every entry is ``accuracy`` (so Last = Avg = ``accuracy``)."""
    return [[accuracy] * (t + 1) for t in range(experiences)]


@pytest.fixture
def known_runs(tmp_path):
    for method, values in KNOWN_LAST.items():
        for seed, value in enumerate(values):
            write_fake_record(tmp_path, strategy=method, bench="bench_x", seed=seed, R=constant_R(value))
    return analysis.load_local_runs(tmp_path)


# -- statistics ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_mean_ci_equals_scipy_t_interval(confidence):
    sample = [0.61, 0.64, 0.58, 0.70, 0.66]
    mean, half, n = analysis.mean_ci(sample, confidence)
    low, high = stats.t.interval(confidence, len(sample) - 1, loc=np.mean(sample), scale=stats.sem(sample))
    assert n == len(sample)
    assert mean == pytest.approx(np.mean(sample))
    assert half == pytest.approx((high - low) / 2, rel=1e-12)
    assert mean - half == pytest.approx(low) and mean + half == pytest.approx(high)


def test_mean_ci_of_too_few_values_has_no_interval():
    assert analysis.mean_ci([0.5, None, float("nan")]) == (0.5, pytest.approx(float("nan"), nan_ok=True), 1)
    mean, half, n = analysis.mean_ci([])
    assert n == 0 and math.isnan(mean) and math.isnan(half)
    assert analysis.format_mean_ci(0.5, float("nan")) == "50.00"
    assert analysis.format_mean_ci(0.5, 0.0123) == "50.00 ± 1.23"


def test_holm_matches_hand_computed_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> raised to 0.06 (monotone)
    assert analysis.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_skips_undefined_p_values():
    adjusted = analysis.holm([0.4, float("nan"), 0.3])
    assert adjusted[0] == pytest.approx(0.6) and adjusted[2] == pytest.approx(0.6)
    assert math.isnan(adjusted[1])
    assert analysis.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    assert analysis.holm([]) == []


def test_summary_table_ci_over_seeds_equals_scipy(known_runs):
    summary = analysis.summary_table(known_runs).set_index("method")
    for method, values in KNOWN_LAST.items():
        low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
        assert summary.loc[method, "n_seeds"] == len(values)
        assert summary.loc[method, "last_accuracy"] == pytest.approx(np.mean(values))
        assert summary.loc[method, "last_accuracy_ci"] == pytest.approx((high - low) / 2)
        assert summary.loc[method, "avg_accuracy"] == pytest.approx(np.mean(values))
        assert summary.loc[method, "forgetting"] == pytest.approx(0.0)
    shown = analysis.summary_display(summary.reset_index())
    assert list(shown["method"]) == sorted(KNOWN_LAST)
    assert shown.iloc[0, 4] == analysis.format_mean_ci(summary.loc["a", "last_accuracy"], summary.loc["a", "last_accuracy_ci"])


def test_repeated_runs_of_a_seed_count_once(tmp_path):
    # Seed 0 ran twice (two output directories): its mean, 0.5, is one sample beside seed 1's 0.8.
    write_fake_record(tmp_path / "first", strategy="a", bench="bench_x", seed=0, R=constant_R(0.4))
    write_fake_record(tmp_path / "again", strategy="a", bench="bench_x", seed=0, R=constant_R(0.6))
    write_fake_record(tmp_path / "first", strategy="a", bench="bench_x", seed=1, R=constant_R(0.8))
    row = analysis.summary_table(analysis.load_local_runs(tmp_path)).iloc[0]
    low, high = stats.t.interval(0.95, 1, loc=0.65, scale=stats.sem([0.5, 0.8]))
    assert (row["n_seeds"], row["n_runs"]) == (2, 3)
    assert row["last_accuracy"] == pytest.approx(0.65)
    assert row["last_accuracy_ci"] == pytest.approx((high - low) / 2)


def test_paired_tests_equal_scipy_on_common_seeds(known_runs):
    tests = analysis.paired_tests(known_runs, "last_accuracy").set_index(["a", "b"])
    assert list(tests.index) == [("a", "b"), ("a", "c"), ("b", "c")]
    raw_t, raw_w = [], []
    for (a, b), row in tests.iterrows():
        n = min(len(KNOWN_LAST[a]), len(KNOWN_LAST[b]))
        x, y = np.array(KNOWN_LAST[a][:n]), np.array(KNOWN_LAST[b][:n])
        t, w = stats.ttest_rel(x, y), stats.wilcoxon(x, y)
        assert row["n_seeds"] == n
        assert row["mean_difference"] == pytest.approx(np.mean(x - y))
        assert row["t_statistic"] == pytest.approx(t.statistic)
        assert row["t_test_p"] == pytest.approx(t.pvalue)
        assert row["wilcoxon_statistic"] == pytest.approx(w.statistic)
        assert row["wilcoxon_p"] == pytest.approx(w.pvalue)
        raw_t.append(t.pvalue)
        raw_w.append(w.pvalue)
    assert list(tests["t_test_p_holm"]) == pytest.approx(analysis.holm(raw_t))
    assert list(tests["wilcoxon_p_holm"]) == pytest.approx(analysis.holm(raw_w))
    assert (tests["t_test_p_holm"] >= tests["t_test_p"]).all()


def test_paired_tests_are_undefined_without_two_common_seeds(tmp_path):
    write_fake_record(tmp_path, strategy="a", bench="bench_x", seed=0, R=constant_R(0.5))
    write_fake_record(tmp_path, strategy="b", bench="bench_x", seed=0, R=constant_R(0.4))
    write_fake_record(tmp_path, strategy="b", bench="bench_x", seed=1, R=constant_R(0.4))
    row = analysis.paired_tests(analysis.load_local_runs(tmp_path)).iloc[0]
    assert row["n_seeds"] == 1 and row["mean_difference"] == pytest.approx(0.1)
    assert all(math.isnan(row[c]) for c in ("t_test_p", "t_test_p_holm", "wilcoxon_p", "wilcoxon_p_holm"))
    assert "n/a" in analysis.paired_display(analysis.paired_tests(analysis.load_local_runs(tmp_path))).iloc[0].tolist()


# -- loading ------------------------------------------------------------------------------------------
def test_local_records_give_one_row_per_finished_run(records):
    runs = analysis.load_local_runs(records)
    assert len(runs) == len(TINY_RECORD_STRATEGIES) * len(TINY_RECORD_SEEDS)
    assert list(runs.columns) == list(analysis.RUN_COLUMNS)
    assert set(runs["strategy"]) == set(TINY_RECORD_STRATEGIES) == set(runs["method"])
    assert set(runs["seed"]) == set(TINY_RECORD_SEEDS)
    for run in runs.itertuples():
        assert run.split == "B4-4-5" and run.n_experiences == 5 == len(run.R) == len(run.accuracy_curve)
        assert [len(row) for row in run.R] == [1, 2, 3, 4, 5]
        assert run.last_accuracy == pytest.approx(run.accuracy_curve[-1])
        assert run.avg_accuracy == pytest.approx(np.mean(run.accuracy_curve))
        assert run.memory_kind == "CPU RSS" and run.peak_memory_mb > 0


def test_local_records_and_wandb_export_give_the_same_table(records):
    local = analysis.load_local_runs(records)
    exported = wandb_export(records)
    crashed = FakeWandbRun(name="crashed", config=dict(exported[0].config), summary={"eval/accuracy": 0.5},
                           group=exported[0].group, state="crashed")
    from_wandb = analysis.runs_from_wandb_objects([*exported, crashed])
    assert from_wandb["source"].str.startswith("wandb:team/cl-bench/").all()
    pd.testing.assert_frame_equal(local.drop(columns="source"), from_wandb.drop(columns="source"))


def test_wandb_loader_passes_project_and_filters_to_the_api(records, monkeypatch):
    import wandb

    calls = []

    class FakeApi:
        def __init__(self, timeout=None):
            pass

        def runs(self, path, filters=None):
            calls.append((path, filters))
            return wandb_export(records)

    monkeypatch.setattr(wandb, "Api", FakeApi)
    runs, source = analysis.load_runs(wandb_project="cl-bench", entity="team", sweep="team/cl-bench/abc123", group="g")
    assert calls == [("team/cl-bench", {"group": "g", "sweep": "abc123"})]
    assert source == "W&B project team/cl-bench (sweep team/cl-bench/abc123, group g)"
    assert len(runs) == len(TINY_RECORD_STRATEGIES) * len(TINY_RECORD_SEEDS)


def test_only_finished_records_of_this_suite_are_loaded(tmp_path):
    write_fake_record(tmp_path, strategy="a", bench="bench_x", seed=0, R=constant_R(0.5))
    write_fake_record(tmp_path, strategy="b", bench="bench_x", seed=0, R=constant_R(0.5), status="running")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "record.json").write_text('{"format": "something-else", "status": "finished"}')
    assert list(analysis.load_local_runs(tmp_path)["strategy"]) == ["a"]
    with pytest.raises(FileNotFoundError):
        analysis.load_local_runs(tmp_path / "missing")


def test_configurations_of_one_strategy_are_never_averaged(tmp_path):
    for seed in (0, 1):
        write_fake_record(tmp_path, strategy="l2p", bench="bench_x", seed=seed, R=constant_R(0.5), preset="default")
        write_fake_record(tmp_path, strategy="l2p", bench="bench_x", seed=seed, R=constant_R(0.7), preset="reference")
        write_fake_record(tmp_path, strategy="ease", bench="bench_x", seed=seed, R=constant_R(0.6))
    summary = analysis.summary_table(analysis.load_local_runs(tmp_path)).set_index("method")
    assert summary["last_accuracy"].to_dict() == pytest.approx(
        {"ease": 0.6, "l2p (preset=default)": 0.5, "l2p (preset=reference)": 0.7})
    assert set(summary["strategy"]) == {"ease", "l2p"}


@pytest.fixture
def two_configs_per_method(tmp_path):
    """cl_lora with epochs 3 and 1, ease with lr 0.01 and 0.02, three seeds each; the second
    configuration of each scores 0.1 lower."""
    for seed in (0, 1, 2):
        for strategy, key, values in (("cl_lora", "epochs", (3, 1)), ("ease", "lr", (0.01, 0.02))):
            for value, accuracy in zip(values, (0.6 + 0.01 * seed, 0.5 + 0.01 * seed)):
                write_fake_record(tmp_path, strategy=strategy, bench="bench_x", seed=seed, R=constant_R(accuracy),
                                  config={key: value, "batch_size": 32})
    return tmp_path


def test_runs_group_by_config_without_seed_and_labels_name_the_keys_that_differ(two_configs_per_method):
    runs = analysis.load_local_runs(two_configs_per_method)
    summary = analysis.summary_table(runs).set_index("method")
    assert summary["last_accuracy"].to_dict() == pytest.approx({
        "cl_lora (epochs=1)": 0.51, "cl_lora (epochs=3)": 0.61, "ease (lr=0.01)": 0.61, "ease (lr=0.02)": 0.51})
    assert (summary["n_seeds"] == 3).all() and (summary["n_runs"] == 3).all()
    assert set(runs["config"].map(lambda c: "seed" in c)) == {False}
    # One configuration left after a selection: its label is the bare strategy again.
    chosen = analysis.select_runs(runs, ["epochs=1"])
    assert set(chosen["method"]) == {"cl_lora"} and len(chosen) == 3


def test_preset_labels_add_only_keys_that_vary_within_a_preset(tmp_path):
    for seed in (0, 1):
        write_fake_record(tmp_path, strategy="l2p", bench="bench_x", seed=seed, R=constant_R(0.5), preset="default",
                          config={"epochs": 3, "lr": 0.005})
        write_fake_record(tmp_path, strategy="l2p", bench="bench_x", seed=seed, R=constant_R(0.4), preset="default",
                          config={"epochs": 1, "lr": 0.005})
        write_fake_record(tmp_path, strategy="l2p", bench="bench_x", seed=seed, R=constant_R(0.7), preset="reference",
                          config={"epochs": 5, "lr": 0.03})
    labels = set(analysis.load_local_runs(tmp_path)["method"])
    assert labels == {"l2p (preset=default, epochs=3)", "l2p (preset=default, epochs=1)", "l2p (preset=reference, epochs=5)"}


def test_select_runs_by_key_value_alternatives_negation_and_run_glob(two_configs_per_method):
    runs = analysis.load_local_runs(two_configs_per_method)
    assert set(analysis.select_runs(runs, ["strategy=ease", "lr=0.02"])["method"]) == {"ease"}
    assert len(analysis.select_runs(runs, ["seed=0,2"])) == 8
    assert set(analysis.select_runs(runs, ["strategy!=ease"])["strategy"]) == {"cl_lora"}
    assert set(analysis.select_runs(runs, ["run=ease-*-s1"])["seed"]) == {1}
    with pytest.raises(ValueError, match="no run has a key 'epoch'"):
        analysis.select_runs(runs, ["epoch=1"])
    with pytest.raises(ValueError, match="key=value"):
        analysis.select_runs(runs, ["epochs"])
    # --runs takes globs of run directories as well as directories.
    globbed = analysis.load_local_runs(str(two_configs_per_method / "cl_lora-*"))
    assert set(globbed["strategy"]) == {"cl_lora"} and len(globbed) == 6
    with pytest.raises(FileNotFoundError, match="no runs match"):
        analysis.load_local_runs(str(two_configs_per_method / "l2p-*"))


def test_significance_pairs_only_runs_of_one_protocol(tmp_path):
    for seed, (a, b) in enumerate([(0.6, 0.5), (0.65, 0.52), (0.7, 0.6)]):
        write_fake_record(tmp_path, strategy="cl_lora", bench="bench_x", seed=seed, R=constant_R(a))
        write_fake_record(tmp_path, strategy="ease", bench="bench_x", seed=seed, R=constant_R(b))
        # The same seeds under another class order: never paired with the runs above.
        write_fake_record(tmp_path, strategy="l2p", bench="bench_x", seed=seed, R=constant_R(b),
                          config={"class_order_seed": -1})
    tests = analysis.paired_tests(analysis.load_local_runs(tmp_path))
    assert list(zip(tests["a"], tests["b"])) == [("cl_lora", "ease")]
    assert tests.iloc[0]["n_seeds"] == 3 and tests.iloc[0]["mean_difference"] == pytest.approx(0.11)


def test_load_runs_from_environment_reads_the_notebook_variables(tmp_path):
    write_fake_record(tmp_path / "runs", strategy="a", bench="bench_x", seed=0, R=constant_R(0.5), group="g1")
    write_fake_record(tmp_path / "runs", strategy="b", bench="bench_x", seed=0, R=constant_R(0.5), group="g2")
    runs, source = analysis.load_runs_from_environment(tmp_path, {})
    assert sorted(runs["strategy"]) == ["a", "b"] and str(tmp_path / "runs") in source
    runs, _ = analysis.load_runs_from_environment("/elsewhere", {analysis.RUNS_ENV: str(tmp_path / "runs"),
                                                                 analysis.WANDB_GROUP_ENV: "g2"})
    assert list(runs["strategy"]) == ["b"]


# -- curves, matrices, efficiency ---------------------------------------------------------------------
def test_curve_summary_and_mean_matrix(records):
    runs = analysis.load_local_runs(records)
    curves = analysis.curve_summary(runs)
    assert len(curves) == len(TINY_RECORD_STRATEGIES) * 5
    for row in curves.itertuples():
        values = [r.accuracy_curve[row.experience] for r in runs.itertuples() if r.method == row.method]
        mean, half, n = analysis.mean_ci(values)
        assert (row.mean, row.n_seeds) == (pytest.approx(mean), n) and row.ci == pytest.approx(half, nan_ok=True)
    block = runs[runs["method"] == "simple_cil"]
    matrix = analysis.mean_accuracy_matrix(block)
    assert matrix[4][2] == pytest.approx(np.mean([R[4][2] for R in block["R"]]))
    with pytest.raises(ValueError):
        analysis.mean_accuracy_matrix(pd.DataFrame({"R": [constant_R(0.5, 2), constant_R(0.5, 3)]}))


def test_figures_render_to_png(records):
    runs = analysis.load_local_runs(records)
    curves = plots.accuracy_curves_figure(analysis.curve_summary(runs), title="curves")
    heatmap = plots.accuracy_matrix_figure(analysis.mean_accuracy_matrix(runs), title="R")
    for fig in (curves, heatmap):
        assert plots.figure_png(fig).startswith(b"\x89PNG")
    assert {t.get_text().split(" ")[0] for t in curves.axes[0].get_legend().get_texts()} == {*TINY_RECORD_STRATEGIES, "chance"}


def test_efficiency_table_keeps_every_column(records):
    table = analysis.efficiency_table(analysis.load_local_runs(records)).set_index("method")
    assert set(analysis.EFFICIENCY) <= set(table.columns)  # even train_images_per_s, which simple_cil never has
    assert table.loc["simple_cil", "trainable_parameters"] == 0
    assert math.isnan(table.loc["simple_cil", "train_images_per_s"])
    assert table.loc["l2p", "trainable_parameters"] > 0 and table.loc["l2p", "train_images_per_s"] > 0
    assert (table["n_runs"] == len(TINY_RECORD_SEEDS)).all()
    shown = analysis.efficiency_display(table.reset_index())
    assert shown.set_index("method").loc["simple_cil", "train images/s"] == "n/a"
    assert shown["peak memory (MB)"].str.endswith("(CPU RSS)").all()


# -- reproduction ledgers -----------------------------------------------------------------------------
def test_ledger_shows_not_yet_run_as_text_never_a_number():
    ledger = analysis.load_ledgers(analysis.ledger_paths(REPO))
    assert {"cl_lora", "l2p", "coda_prompt", "ease", "simple_cil"} <= set(ledger["strategy"])
    shown = analysis.reproduction_table(ledger)
    for (_, entry), (_, row) in zip(ledger.iterrows(), shown.iterrows()):
        for key in ("last", "avg"):
            if entry[f"ours_{key}"] is None or pd.isna(entry[f"ours_{key}"]):
                assert row[f"ours {key.capitalize()}"] == analysis.NOT_YET_RUN
        assert row["loaded runs Last"] == analysis.NOT_IN_THESE_RUNS


def test_reproduction_table_uses_only_runs_of_the_entrys_configuration(tmp_path):
    from cl_bench.config import resolve_config

    ledger_file = tmp_path / "ledger.yaml"
    ledger_file.write_text(yaml.safe_dump({"entries": [
        {"strategy": "ease", "bench": "digits_animals", "split": "B4-4-5", "paper": {"last": 80.0, "avg": None, "source": "s"},
         "ours": {"last": 79.5, "avg": 85.25, "seeds": 3}, "command": "python sweeps/run.py --strategy ease --bench digits_animals"},
        {"strategy": "l2p", "bench": "digits_animals", "split": "B4-4-5", "paper": {"last": 70.0, "avg": 75.0, "source": "s"},
         "ours": None, "command": "python sweeps/compare.py --bench digits_animals --strategies l2p --seeds 0,1"},
    ]}))
    preset = resolve_config("l2p", "digits_animals", {}).semantic_json()
    five = {"classes_per_experience": [4] * 5, "test_sizes": [40] * 5}
    for seed, accuracy in enumerate([0.5, 0.7]):
        write_fake_record(tmp_path / "runs", strategy="l2p", bench="digits_animals", seed=seed,
                          R=constant_R(accuracy, 5), config={**preset, "seed": seed}, **five)
        # Another configuration of the same strategy, bench and split: counted, never averaged in.
        write_fake_record(tmp_path / "runs", strategy="l2p", bench="digits_animals", seed=seed,
                          R=constant_R(0.1, 5), config={**preset, "seed": seed, "epochs": 1}, **five)
    write_fake_record(tmp_path / "runs", strategy="ease", bench="digits_animals", seed=0, R=constant_R(0.9, 5),
                      config={"epochs": 1}, **five)
    shown = analysis.reproduction_table(analysis.load_ledgers([ledger_file]),
                                        analysis.load_local_runs(tmp_path / "runs")).set_index("method")
    assert shown.loc["ease", ["paper Last", "paper Avg", "ours Last", "ours Avg"]].tolist() == ["80.00", "n/a", "79.50", "85.25"]
    assert shown.loc["l2p", "ours Last"] == analysis.NOT_YET_RUN
    assert shown.loc["l2p", "loaded runs Last"] == analysis.format_mean_ci(*analysis.mean_ci([0.5, 0.7])[:2])
    assert shown.loc["l2p", ["loaded seeds", "other configs (runs left out)"]].tolist() == ["2", "2"]
    assert shown.loc["ease", "loaded runs Avg"] == analysis.NOT_IN_THESE_RUNS
    assert shown.loc["ease", "other configs (runs left out)"] == "1"
    markdown = analysis.ledger_markdown(ledger_file)
    assert "| l2p | digits_animals | B4-4-5 | 70.00 | 75.00 | not yet run (needs a GPU) | not yet run (needs a GPU) |" in markdown


def test_markdown_table_escapes_pipes():
    text = analysis.markdown_table(pd.DataFrame({"a": ["x|y"], "b": [float("nan")]}))
    assert text.splitlines() == ["| a | b |", "|---|---|", "| x\\|y |  |"]
