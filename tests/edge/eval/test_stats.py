from __future__ import annotations

import numpy as np

from edge.eval.stats import paired_difference, wilson


def test_wilson_interval_brackets_the_rate() -> None:
    low, high = wilson(5, 20)
    assert low < 0.25 < high and low >= 0 and high <= 1
    assert wilson(0, 10)[0] == 0.0


def test_paired_difference_of_identical_methods_is_exactly_zero() -> None:
    values = np.array([1.0, 0.0, 1.0, 1.0])
    assert paired_difference(values, values, 500, seed=0) == (0.0, 0.0, 0.0)
