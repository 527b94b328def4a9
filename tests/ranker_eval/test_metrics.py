"""Intervals and subsampling behave at the edges small problem sets hit."""

from __future__ import annotations

import numpy as np

from ranker_eval.metrics import k_grid, paired_difference, subsets, verdict, wilson


def test_wilson_is_inside_unit_interval_and_contains_the_estimate() -> None:
    assert wilson(0, 10)[0] == 0.0 and wilson(0, 10)[1] > 0.0
    assert wilson(10, 10)[1] == 1.0 and wilson(10, 10)[0] < 1.0
    low, high = wilson(3, 10)
    assert low < 0.3 < high


def test_paired_difference_and_verdict() -> None:
    a, b = np.ones(30), np.zeros(30)
    mean, low, high = paired_difference(a, b, 200, 0)
    assert mean == 1.0 and verdict(low, high) == "wins"
    assert verdict(*paired_difference(a, a, 200, 0)[1:]) == "tie"


def test_subsets_are_distinct_candidates_and_full_pool_is_in_order() -> None:
    s = subsets(8, 4, 5, 3, seed=0)
    assert s.shape == (5, 3, 4)
    assert all(len(set(row)) == 4 for row in s.reshape(-1, 4))
    assert (subsets(8, 8, 5, 3, seed=0)[0] == np.arange(8)).all()
    assert k_grid(32) == [1, 2, 4, 8, 16, 32] and k_grid(12) == [1, 2, 4, 8, 12]


def test_one_problem_is_too_few_to_call_a_win() -> None:
    """Issue 24: `ranker-eval --quick` (n=1 test problem) reported wins."""
    one_hit = paired_difference(np.ones(1), np.zeros(1), 200, 0)
    assert one_hit[1:] == (1.0, 1.0)  # every resample is the same problem
    assert verdict(*one_hit[1:], n=1) == "too few"
    assert verdict(*paired_difference(np.ones(9), np.zeros(9), 200, 0)[1:], n=9) == "too few"
    many = paired_difference(np.ones(10), np.zeros(10), 200, 0)
    assert verdict(*many[1:], n=10) == "wins"
