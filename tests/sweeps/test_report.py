"""sweeps/report.py: a Markdown report with figures covering exactly the methods and benches that
have records, and one-line errors for bad input."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cl_bench import analysis
from helpers import REPO, TINY_RECORD_STRATEGIES, tiny_run_records, write_fake_record

REPORT_PY = REPO / "sweeps" / "report.py"
#: Strategies and benches the suite knows that the tiny records never ran.
ABSENT_STRATEGIES = ("cl_lora", "coda_prompt", "ease")
ABSENT_BENCHES = ("split_cifar100", "imagenet_r")
REPRODUCTION_HEADING = "## Reproduction ledgers"


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return tiny_run_records(tmp_path_factory)


def report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPORT_PY), *args], capture_output=True, text=True, cwd=REPO, timeout=300)


def sections(text: str) -> tuple[str, str]:
    """The results part of a report, and its reproduction-ledger part."""
    head, _, ledger = text.partition(REPRODUCTION_HEADING)
    assert ledger, "the report has no reproduction section"
    return head, ledger


def bench_section(text: str, heading: str) -> str:
    """The text under the first ``### heading`` up to the next heading."""
    match = re.search(rf"^### {re.escape(heading)}\n(.*?)(?=^#)", text, flags=re.M | re.S)
    assert match, f"no section {heading}"
    return match.group(1)


def test_report_covers_the_records_and_nothing_else(records, tmp_path):
    out = tmp_path / "report"
    result = report("--runs", str(records), "--out", str(out))
    assert result.returncode == 0, result.stderr
    text = (out / "report.md").read_text()
    results, ledger = sections(text)
    for strategy in TINY_RECORD_STRATEGIES:
        assert strategy in bench_section(results, "digits_animals B4-4-5")
    for name in (*ABSENT_STRATEGIES, *ABSENT_BENCHES):
        assert name not in results, f"{name} has no records but appears in the results"
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(images) == 1 + len(TINY_RECORD_STRATEGIES)  # the bench's curves, one heatmap per method
    for image in images:
        assert (out / image).read_bytes().startswith(b"\x89PNG")
    assert analysis.NOT_YET_RUN in ledger
    for line in ledger.splitlines():
        if line.startswith("| cl_lora |") and "digits_animals" not in line:  # no runs or numbers: text instead
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert cells[5:9] == [analysis.NOT_YET_RUN] * 2 + [analysis.NOT_IN_THESE_RUNS] * 2


def test_report_lists_per_bench_only_the_methods_that_ran_there(tmp_path):
    runs = tmp_path / "runs"
    for seed, (a, b) in enumerate([(0.5, 0.4), (0.6, 0.45), (0.55, 0.5)]):
        write_fake_record(runs, strategy="simple_cil", bench="digits_animals", seed=seed, R=[[a], [a, a]])
        write_fake_record(runs, strategy="ease", bench="digits_animals", seed=seed, R=[[b], [b, b]])
    twenty = [5] * 20
    from cl_bench.config import resolve_config

    ledger_config = resolve_config("simple_cil", "split_cifar100", {}).semantic_json()  # the ledger command's config
    for seed in (0, 1):
        write_fake_record(runs, strategy="simple_cil", bench="split_cifar100", seed=seed, config={**ledger_config, "seed": seed},
                          R=[[0.8] * (t + 1) for t in range(20)], classes_per_experience=twenty, test_sizes=[500] * 20)
    result = report("--runs", str(runs), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    results, ledger = sections((tmp_path / "out" / "report.md").read_text())
    cifar = bench_section(results, "split_cifar100 B5-5-20")
    assert "simple_cil" in cifar and "ease" not in cifar
    assert "| simple_cil | 2 | 80.00 ± 0.00 |" in cifar
    assert "ease" in bench_section(results, "digits_animals B2-2-2")
    for name in ("cl_lora", "l2p", "coda_prompt", "imagenet_r"):
        assert name not in results
    # The ledger entry for these runs shows them; the ledger's own "ours" stays text.
    row = next(line for line in ledger.splitlines() if line.startswith("| simple_cil | split_cifar100 | B5-5-20 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[5:9] == [analysis.NOT_YET_RUN, analysis.NOT_YET_RUN, "80.00 ± 0.00", "80.00 ± 0.00"]


@pytest.mark.parametrize("setup", ["missing", "empty", "unfinished"])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, setup):
    runs = tmp_path / "runs"
    if setup != "missing":
        runs.mkdir()
    if setup == "unfinished":
        write_fake_record(runs, strategy="ease", bench="digits_animals", seed=0, R=[[0.5]], status="running")
    result = report("--runs", str(runs), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "error" in result.stderr
    assert not (tmp_path / "out" / "report.md").exists()


def run_report_in_process(*args: str) -> tuple[int, str]:
    """``sweeps/report.py`` called in this process (no interpreter start-up): exit code, report text."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cl_bench_report_script", REPORT_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = module.main(list(args))
    out = next(iter(a for a in args if a.startswith("--out=")), "").partition("=")[2]
    path = Path(out) / "report.md"
    return code, path.read_text() if code == 0 else ""


@pytest.fixture
def two_configs_per_method(tmp_path):
    """cl_lora with epochs 3 and 1, ease with lr 0.01 and 0.02, three seeds each."""
    runs = tmp_path / "runs"
    for seed in (0, 1, 2):
        for strategy, key, values in (("cl_lora", "epochs", (3, 1)), ("ease", "lr", (0.01, 0.02))):
            for value, accuracy in zip(values, (0.6 + 0.01 * seed, 0.5 + 0.02 * seed)):
                write_fake_record(runs, strategy=strategy, bench="digits_animals", seed=seed,
                                  R=[[accuracy] * (t + 1) for t in range(2)], config={key: value})
    return runs


def test_report_labels_configurations_and_pairs_only_like_with_like(two_configs_per_method, tmp_path):
    code, text = run_report_in_process(f"--runs={two_configs_per_method}", f"--out={tmp_path / 'out'}")
    assert code == 0
    results = bench_section(text, "digits_animals B2-2-2")
    for label in ("cl_lora (epochs=1)", "cl_lora (epochs=3)", "ease (lr=0.01)", "ease (lr=0.02)"):
        assert f"| {label} | 3 |" in results
    assert not re.search(r"^\| \w+ \[", results, flags=re.M), "no run-group hashes in labels"
    significance = text.split("## Significance")[1].split("## Efficiency")[0]
    pairs = [line for line in significance.splitlines() if line.startswith("| digits_animals |")]
    assert len(pairs) == 2 * 6  # four groups under one protocol: six pairs, for Last and for Avg
    assert "## Run sets" in text


def test_report_where_and_runs_glob_choose_the_run_set(two_configs_per_method, tmp_path):
    code, text = run_report_in_process(f"--runs={two_configs_per_method}", "--where", "epochs=3,1",
                                       "--where=strategy=cl_lora", f"--out={tmp_path / 'a'}")
    assert code == 0
    results = bench_section(sections(text)[0], "digits_animals B2-2-2")
    assert "cl_lora (epochs=1)" in results and "ease" not in results
    assert "where epochs=3,1 and strategy=cl_lora" in text
    code, text = run_report_in_process(f"--runs={two_configs_per_method}/ease-*", "--where", "lr!=0.02",
                                       f"--out={tmp_path / 'b'}")
    results = bench_section(sections(text)[0], "digits_animals B2-2-2")
    assert code == 0 and "| ease | 3 |" in results and "cl_lora" not in results  # one configuration: a bare name


def test_report_refuses_a_where_key_no_run_has(two_configs_per_method, tmp_path):
    result = report("--runs", str(two_configs_per_method), "--where", "epoch=1", "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "no run has a key 'epoch'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
