"""The notebooks never rot: both execute headless (nbclient) on run records made by tiny offline
runs during the test, and the copies in git hold no outputs."""

from __future__ import annotations

import nbformat
import pytest

from cl_bench import analysis
from helpers import REPO, TINY_RECORD_STRATEGIES, tiny_run_records

NOTEBOOKS = REPO / "notebooks"
NOTEBOOK_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return tiny_run_records(tmp_path_factory)


def execute(name: str, monkeypatch, **env: str) -> nbformat.NotebookNode:
    """Run a notebook in a fresh kernel started from the checkout, with ``env`` in its environment."""
    from nbclient import NotebookClient

    for key in (analysis.RUNS_ENV, analysis.WANDB_PROJECT_ENV, analysis.WANDB_ENTITY_ENV,
                analysis.WANDB_SWEEP_ENV, analysis.WANDB_GROUP_ENV):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=NOTEBOOK_TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO)}}).execute()
    return nb


def outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]


def shown_text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for output in outputs(nb):
        data = output.get("data", {})
        parts += [output.get("text", ""), data.get("text/plain", ""), data.get("text/html", ""), data.get("text/markdown", "")]
    return "\n".join(parts)


@pytest.mark.parametrize("name", ["compare.ipynb", "reproduce.ipynb"])
def test_notebooks_are_stored_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name} holds outputs: clear them"


def test_compare_notebook_executes_on_fresh_records(records, monkeypatch):
    nb = execute("compare.ipynb", monkeypatch, **{analysis.RUNS_ENV: str(records)})
    assert not [o for o in outputs(nb) if o.output_type == "error"]
    text = shown_text(nb)
    for strategy in TINY_RECORD_STRATEGIES:
        assert strategy in text
    assert "digits_animals" in text and "Wilcoxon p (Holm)" in text and "trainable params" in text
    figures = [o for o in outputs(nb) if "image/png" in o.get("data", {})]
    assert len(figures) == 2, "one A_t curve figure and one heatmap figure for the single bench"


def test_reproduce_notebook_shows_not_yet_run_as_text(records, monkeypatch):
    nb = execute("reproduce.ipynb", monkeypatch, **{analysis.RUNS_ENV: str(records)})
    text = shown_text(nb)
    assert analysis.NOT_YET_RUN in text and analysis.NOT_IN_THESE_RUNS in text
    ledger = analysis.load_ledgers(analysis.ledger_paths(REPO))
    for command in ledger.loc[ledger["ours_last"].isna(), "command"]:
        assert command in text


def test_reproduce_notebook_runs_without_any_runs(tmp_path, monkeypatch):
    nb = execute("reproduce.ipynb", monkeypatch, **{analysis.RUNS_ENV: str(tmp_path / "missing")})
    assert "no runs loaded" in shown_text(nb) and analysis.NOT_YET_RUN in shown_text(nb)
