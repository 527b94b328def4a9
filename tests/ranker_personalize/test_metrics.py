"""Hit rates count ties as hits; baselines and intervals behave as documented."""

from __future__ import annotations

import numpy as np

from ranker_personalize import metrics
from ranker_personalize.experiments import _first_clear_win


def test_hits_ties_and_random_rate() -> None:
    scores = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    assert metrics.hits(scores, np.array([2, 0])).tolist() == [1.0, 1.0]
    assert metrics.hits(scores, np.array([0, 3])).tolist() == [0.0, 1.0]
    assert metrics.decisive(scores).tolist() == [True, False]
    assert metrics.random_rate(scores).tolist() == [0.5, 1.0]
    assert metrics.relative_score(scores, np.array([0, 0]))[0] == 1 / 3


def test_bootstrap_interval_brackets_the_mean() -> None:
    values = np.random.default_rng(0).random(200) < 0.3
    est = metrics.bootstrap(values.astype(float))
    assert est.low < est.mean < est.high
    assert est.high - est.low < 0.2
    same = metrics.paired_gain(values, values)
    assert same.mean == same.low == same.high == 0.0


def test_first_clear_win_needs_every_later_budget() -> None:
    def gain(low: float) -> dict[str, float]:
        return {"mean": low + 0.1, "low": low, "high": low + 0.2}

    budgets = (0, 10, 25, 50)
    gains = {0: gain(0.0), 10: gain(0.05), 25: gain(-0.01), 50: gain(0.02)}
    assert _first_clear_win(gains, budgets) == 50
    gains[25] = gain(0.01)
    assert _first_clear_win(gains, budgets) == 10
    gains[50] = gain(-0.1)
    assert _first_clear_win(gains, budgets) is None
