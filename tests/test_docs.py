"""The READMEs keep their promises: the set-up commands CI runs, and ledgers in step with their data."""

import re

import pytest

from cl_bench.analysis import ledger_markdown
from helpers import REPO


def test_readme_gives_the_two_setup_commands_and_ci_runs_the_test_one():
    readme = (REPO / "README.md").read_text()
    assert "bash sweeps/quickstart.sh          # installs on first use" in readme
    assert "bash sweeps/quickstart.sh --test" in readme
    assert "bash sweeps/quickstart.sh --test" in (REPO / ".ci" / "run").read_text()
    assert not re.search(r"__[A-Z_]+__", readme), "an unfilled placeholder"


@pytest.mark.parametrize("readme, data", [
    ("strategies/cl_lora/README.md", "strategies/cl_lora/ledger.yaml"),
    ("strategies/inflora/README.md", "strategies/inflora/ledger.yaml"),
    ("strategies/sd_lora/README.md", "strategies/sd_lora/ledger.yaml"),
    ("baselines/README.md", "baselines/ledger.yaml"),
])
def test_ledger_tables_match_their_data(readme, data):
    text = (REPO / readme).read_text()
    between = text.split("<!-- ledger:start -->")[1].split("<!-- ledger:end -->")[0].strip()
    assert between == ledger_markdown(REPO / data)
