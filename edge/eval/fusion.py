"""Combining two scorers of the same candidates (numpy only): rank-based and min-max fusion.

SWIFT reports that its scores and a text reward model's are complementary:
each catches failures the other misses. Their scales are unrelated (a gated
mean of token rewards vs a classifier logit), so they are combined in
scale-free ways:

- ``rank_fusion``: each candidate takes the *worse* of its two ranks, so a
  candidate must look good to both scorers to win; ties on the worse rank go
  to the better of the two ranks (then to the earlier candidate).
- ``minmax_fusion``: each score vector is min-max scaled to [0, 1] within the
  group, then averaged with a weight.

All functions work along the last axis, so ``(K,)`` groups and ``(B, K)``
batches take the same call. ``FusedScorer`` wraps two scorers (anything
callable returning per-candidate scores for the same input) into one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from edge._errors import ConfigError, FeatureError

__all__ = ["FusedScorer", "FusionMethod", "minmax_fusion", "minmax_scale", "rank_fusion", "ranks"]

FusionMethod = Literal["rank", "minmax"]
Scorer = Callable[..., np.ndarray]


def _scores(values: object, what: str) -> np.ndarray:
    out = np.asarray(values, dtype=np.float64)
    if out.ndim == 0 or out.shape[-1] == 0:
        raise FeatureError(f"{what} must hold at least one candidate score, got shape {out.shape}")
    if not np.isfinite(out).all():
        raise FeatureError(f"{what} contains a non-finite score")
    return out


def _pair(a: object, b: object) -> tuple[np.ndarray, np.ndarray]:
    first, second = _scores(a, "first scores"), _scores(b, "second scores")
    if first.shape != second.shape:
        raise FeatureError(f"score shapes differ: {first.shape} vs {second.shape}")
    return first, second


def ranks(scores: object) -> np.ndarray:
    """0-based rank of each candidate along the last axis, 0 = best; ties share the best rank."""
    s = _scores(scores, "scores")
    # Rank = number of candidates with a strictly higher score ("competition" ranking).
    return (s[..., None, :] > s[..., :, None]).sum(-1)


def rank_fusion(first: object, second: object) -> np.ndarray:
    """Fused scores (higher is better) from the worse of the two ranks of each candidate."""
    a, b = _pair(first, second)
    ra, rb = ranks(a), ranks(b)
    worse, better = np.maximum(ra, rb), np.minimum(ra, rb)
    k = a.shape[-1]
    return -(worse + better / (k + 1.0))  # lexicographic: worse rank first, then better rank


def minmax_scale(scores: object) -> np.ndarray:
    """Scores scaled to [0, 1] along the last axis; a constant group maps to 0.5."""
    s = _scores(scores, "scores")
    low, high = s.min(-1, keepdims=True), s.max(-1, keepdims=True)
    span = high - low
    return np.where(span > 0, (s - low) / np.where(span > 0, span, 1.0), 0.5)


def minmax_fusion(first: object, second: object, weight: float = 0.5) -> np.ndarray:
    """``weight * scaled(first) + (1 - weight) * scaled(second)`` per group."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    a, b = _pair(first, second)
    return weight * minmax_scale(a) + (1.0 - weight) * minmax_scale(b)


@dataclass(frozen=True)
class FusedScorer:
    """Two scorers of the same candidates, combined into one.

    Both are called with the same arguments (e.g. a group's features, or a
    harness pool) and must return scores of equal shape, higher is better.
    """

    first: Scorer  # e.g. a SWIFT session's ``score``
    second: Scorer  # e.g. a text reward model's scorer
    method: FusionMethod = "rank"  # "rank": worse of the two ranks; "minmax": scaled average
    weight: float = 0.5  # minmax only: weight of ``first`` (``second`` gets 1 - weight)

    def __post_init__(self) -> None:
        if self.method not in ("rank", "minmax"):
            raise ConfigError(f"method must be 'rank' or 'minmax', got {self.method!r}")
        if not 0.0 <= self.weight <= 1.0:
            raise ConfigError(f"weight must be in [0, 1], got {self.weight}")

    def combine(self, first: object, second: object) -> np.ndarray:
        """Fuse two already computed score arrays with this scorer's method."""
        if self.method == "rank":
            return rank_fusion(first, second)
        return minmax_fusion(first, second, self.weight)

    def __call__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return self.combine(self.first(*args, **kwargs), self.second(*args, **kwargs))
