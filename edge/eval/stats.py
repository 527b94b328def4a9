"""Intervals for small evaluation sets, shared by the demo, the quality
harness and the personalization study (numpy only).

With a few dozen test prompts a point estimate alone says little: a rate
gets a Wilson interval, and "A beats B on the same prompts" a paired
percentile bootstrap over prompts (pairing removes prompt difficulty).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["Z95", "bootstrap_ci", "paired_difference", "wilson"]

Z95 = 1.959964  # two-sided 95% normal quantile


def wilson(hits: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion; sensible at 0, 1 and small n."""
    if n == 0:
        return (math.nan, math.nan)
    p = hits / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if hits <= 0 else max(0.0, centre - half)  # exact ends: no rounding slop
    high = 1.0 if hits >= n else min(1.0, centre + half)
    return (low, high)


def bootstrap_ci(
    values: np.ndarray, resamples: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-prompt `values`."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(resamples, len(values)))
    means = values[idx].mean(axis=1)
    tail = (1 - level) / 2
    return (float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail)))


def paired_difference(
    a: np.ndarray, b: np.ndarray, resamples: int, seed: int
) -> tuple[float, float, float]:
    """Mean of a - b over the same prompts, and its bootstrap interval."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    low, high = bootstrap_ci(diff, resamples, seed)
    return (float(diff.mean()) if len(diff) else math.nan, low, high)
