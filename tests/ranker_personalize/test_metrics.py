"""Hit rates count ties as hits; baselines and intervals behave as documented."""

from __future__ import annotations

import numpy as np

from ranker_personalize import metrics
from ranker_personalize.experiments import _first_clear_win, events_to_reach
from ranker_personalize.study import summarise


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


def test_events_to_reach_is_the_first_budget_at_or_above_the_target() -> None:
    curve = {0: 0.2, 10: 0.35, 25: 0.5, 50: 0.45, 100: 0.6}
    assert events_to_reach(curve, 0.5) == 25
    assert events_to_reach(curve, 0.2) == 0
    assert events_to_reach(curve, 0.61) is None


def test_the_summary_has_exactly_the_issues_fields() -> None:
    def est(x: float) -> dict[str, float]:
        return {"mean": x, "low": x - 0.05, "high": x + 0.05}

    users = {
        name: {
            "first": est(first),
            "personal": {"0": est(first), "50": est(at50), "200": est(at200)},
            "global": {"0": est(first), "50": est(0.3), "200": est(0.25)},
            "ceiling": est(0.9),
        }
        for name, first, at50, at200 in (("a", 0.2, 0.5, 0.7), ("b", 0.4, 0.7, 0.8))
    }
    results = {"users": users, "costs": {"torch_free": {"fit_ms": {"p50": 4.321}}}}
    summary = summarise(results, (50, 200))
    assert set(summary) == {
        "first_sample_mean", "mean_top1_at_50", "mean_top1_at_200",
        "update_ms_p50_torch_free", "per_user", "content",
    }  # fmt: skip
    assert summary["content"]["per_user"] == []  # no content user among a and b
    assert summary["first_sample_mean"] == 30.0 and summary["mean_top1_at_50"] == 60.0
    assert summary["mean_top1_at_200"] == 75.0 and summary["update_ms_p50_torch_free"] == 4.32
    assert summary["per_user"][0] == {
        "user": "a", "first_sample": 20.0, "at_50": 50.0, "at_200": 70.0,
        "global_at_200": 25.0, "ceiling": 90.0,
    }  # fmt: skip
