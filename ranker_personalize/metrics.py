"""Top-1 agreement with a user's judge, baselines, and bootstrap intervals.

A pick is a *hit* when the judge gives it the top score of its K candidates
(ties: any top-scoring candidate is a hit). Prompts where all K candidates tie
for the judge say nothing about taste, so rates are over *decisive* prompts
only; the random baseline is then the exact expectation, mean(#top / K).
Intervals are 95% percentile bootstraps over test prompts of the seed-averaged
hit, because the test prompts (not the seeds) are the main source of spread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.eval.stats import bootstrap_ci

__all__ = [
    "Estimate",
    "bootstrap",
    "decisive",
    "hits",
    "judge_matrix",
    "paired_gain",
    "random_rate",
    "relative_score",
]


@dataclass(frozen=True)
class Estimate:
    """A rate with its 95% interval."""

    mean: float  # point estimate
    low: float  # 2.5th bootstrap percentile
    high: float  # 97.5th bootstrap percentile

    def fmt(self) -> str:
        return f"{self.mean:.2f} [{self.low:.2f}, {self.high:.2f}]"


def judge_matrix(scores: list[np.ndarray]) -> np.ndarray:
    """(P, K) judge scores from per-prompt score vectors."""
    return np.stack(scores)


def decisive(scores: np.ndarray) -> np.ndarray:
    """(P,) bool: prompts whose candidates do not all tie for the judge."""
    return scores.max(1) > scores.min(1)


def hits(scores: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """(P,) float: 1 where the pick has the judge's top score."""
    rows = np.arange(len(picks))
    return (scores[rows, picks] == scores.max(1)).astype(np.float64)


def relative_score(scores: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """(P,) judge score of the pick scaled so the worst candidate is 0 and the best is 1."""
    span = np.maximum(scores.max(1) - scores.min(1), 1e-12)
    return (scores[np.arange(len(picks)), picks] - scores.min(1)) / span


def random_rate(scores: np.ndarray) -> np.ndarray:
    """(P,) expected hit of a uniformly random pick."""
    return (scores == scores.max(1, keepdims=True)).mean(1)


def bootstrap(per_prompt: np.ndarray, n: int = 2000, seed: int = 0) -> Estimate:
    """Mean of per-prompt values with a 95% bootstrap interval over prompts."""
    values = np.asarray(per_prompt, dtype=np.float64)
    if values.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    low, high = bootstrap_ci(values, n, seed)
    return Estimate(float(values.mean()), low, high)


def paired_gain(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0) -> Estimate:
    """Mean of a - b over the same prompts, with a paired bootstrap interval."""
    return bootstrap(np.asarray(a, np.float64) - np.asarray(b, np.float64), n, seed)
