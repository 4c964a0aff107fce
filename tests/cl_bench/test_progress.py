"""Progress reaches logs: with stdout not a terminal, the progress plugin prints one line per
interval for training and for evaluation, with rates and an ETA, and numbers experiences from 1
like the run's summary lines; importing the suite prints no qpsolvers warning."""

from __future__ import annotations

import io
import re
import subprocess
import sys

from helpers import REPO

#: A progress line: [label exp k/n train|eval] ... step s/S (p%), r steps/s, i img/s[, loss l], elapsed m:ss, ETA m:ss
LINE = re.compile(r"^\[naive exp (\d)/2 (train|eval)\] (epoch \d/\d, )?step (\d+)/(\d+) \(\d+%\), [\d.]+ steps/s, "
                  r"\d+ img/s(, loss [\d.]+)?, elapsed \d+:\d\d, ETA (\d+:\d\d|\?)$")

def test_progress_lines_reach_captured_output_for_training_and_evaluation(capsys):
    from cl_bench.training.plugins import ProgressBar
    from helpers import tiny_naive_strategy

    strategy, benchmark = tiny_naive_strategy([ProgressBar(2, label="naive", every_s=0)])
    for t, experience in enumerate(benchmark.train_stream):
        strategy.train(experience)
        strategy.eval(benchmark.test_stream[: t + 1])
    stdout = capsys.readouterr().out  # captured: not a terminal, as in a log file
    lines = [line for line in stdout.splitlines() if line.startswith("[naive")]
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), [line for line, m in zip(lines, parsed) if not m]
    seen = {(m.group(1), m.group(2)) for m in parsed}
    assert seen == {("1", "train"), ("1", "eval"), ("2", "train"), ("2", "eval")}  # counted from 1, like the summary
    train = [m for m in parsed if m.group(2) == "train" and m.group(1) == "1"]
    assert int(train[-1].group(4)) == int(train[-1].group(5)) == 2 * 16 // 4  # 2 epochs of 16 images, batch 4
    assert all(m.group(6) for m in train), "training lines carry the loss"


def test_importing_the_suite_silences_the_qpsolvers_warning():
    """Avalanche imports qpsolvers, which warns on import that no QP solver is installed."""
    result = subprocess.run([sys.executable, "-c", "import cl_bench, qpsolvers"], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0 and "QP solver" not in result.stderr, result.stderr
    without = subprocess.run([sys.executable, "-c", "import qpsolvers"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert "QP solver" in without.stderr  # the check above could fail


def test_lines_come_every_interval_not_every_step():
    from cl_bench.training.plugins import ProgressBar
    from helpers import tiny_naive_strategy

    ticks = iter(range(10_000))  # one second per clock reading
    buffer = io.StringIO()
    progress = ProgressBar(2, label="naive", every_s=10, lines_to=buffer, clock=lambda: float(next(ticks)))
    strategy, benchmark = tiny_naive_strategy([progress], epochs=4, per_class=32)
    strategy.train(benchmark.train_stream[0])  # 4 epochs x 16 steps
    lines = buffer.getvalue().splitlines()
    assert [int(LINE.match(line).group(4)) for line in lines] == [10, 20, 30, 40, 50, 60]  # one clock read a step
