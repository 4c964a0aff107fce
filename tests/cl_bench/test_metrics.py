"""Metrics against hand-computed accuracy matrices."""

import math

import pytest

from cl_bench import metrics

# Three experiences with unequal test sizes, so pooled and per-experience means differ.
R = [
    [0.90],
    [0.70, 0.80],
    [0.60, 0.50, 1.00],
]
N = [100, 100, 200]


def test_pooled_accuracy_weights_by_test_size():
    assert metrics.pooled_accuracy(R, N, 0) == pytest.approx(0.90)
    assert metrics.pooled_accuracy(R, N, 1) == pytest.approx(0.75)
    # (0.6*100 + 0.5*100 + 1.0*200) / 400, not the unweighted mean 0.7
    assert metrics.pooled_accuracy(R, N, 2) == pytest.approx(310 / 400)


def test_last_and_average_incremental_accuracy():
    assert metrics.last_accuracy(R, N) == pytest.approx(0.775)
    assert metrics.average_incremental_accuracy(R, N) == pytest.approx((0.90 + 0.75 + 0.775) / 3)


def test_forgetting_uses_best_earlier_accuracy():
    # exp 0: max(0.9, 0.7) - 0.6 = 0.3 ; exp 1: max(0.8) - 0.5 = 0.3
    assert metrics.forgetting(R) == pytest.approx(0.3)
    R2 = [[0.5], [0.9, 0.8], [0.7, 0.8, 0.9]]  # exp 0 improves after t=0: max is 0.9
    assert metrics.forgetting(R2) == pytest.approx(((0.9 - 0.7) + (0.8 - 0.8)) / 2)


def test_backward_transfer():
    assert metrics.backward_transfer(R) == pytest.approx(((0.6 - 0.9) + (0.5 - 0.8)) / 2)
    assert metrics.forgetting([[0.5]]) is None and metrics.backward_transfer([[0.5]]) is None


def test_old_new_split():
    old, new = metrics.old_new_accuracy(R, N, 2)
    assert old == pytest.approx(0.55) and new == pytest.approx(1.0)
    assert metrics.old_new_accuracy(R, N, 0) == (None, 0.9)


def test_summary_and_chance():
    s = metrics.summarize(R, N, [5, 5, 10])
    assert s.chance_last == pytest.approx(1 / 20)
    assert s.chance_avg == pytest.approx((1 / 5 + 1 / 10 + 1 / 20) / 3)
    assert s.curve == pytest.approx([0.9, 0.75, 0.775])
    assert not math.isnan(s.avg)
