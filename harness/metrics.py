"""Intervals for small problem sets: Wilson for proportions, bootstrap for differences.

With 30-40 test problems per task a point estimate alone says little, so
every accuracy in the report carries a 95% interval, and every "ranker beats
baseline" claim is a paired bootstrap over problems (the two methods are
scored on the same candidates, so pairing removes problem difficulty).
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959964


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
    """Percentile bootstrap interval of the mean of per-problem `values`."""
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
    """Mean of a - b over problems and its bootstrap interval."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    low, high = bootstrap_ci(diff, resamples, seed)
    return (float(diff.mean()) if len(diff) else math.nan, low, high)


def verdict(low: float, high: float) -> str:
    """'wins' / 'loses' when the 95% interval of the difference excludes 0, else 'tie'."""
    if low > 0:
        return "wins"
    if high < 0:
        return "loses"
    return "tie"


def subsets(k_pool: int, k: int, repeats: int, n_problems: int, seed: int) -> np.ndarray:
    """(repeats, n_problems, k) random candidate subsets; k == pool means the pool in order."""
    if k >= k_pool:
        return np.broadcast_to(np.arange(k_pool), (1, n_problems, k_pool)).copy()
    rng = np.random.default_rng(seed + 7919 * k)
    keys = rng.random((repeats, n_problems, k_pool))
    return np.argsort(keys, axis=-1)[..., :k]


def k_grid(k_pool: int) -> list[int]:
    """1, 2, 4, ... up to the pool size (the pool size included)."""
    grid = [1]
    while grid[-1] * 2 <= k_pool:
        grid.append(grid[-1] * 2)
    if grid[-1] != k_pool:
        grid.append(k_pool)
    return grid
