"""Intervals (shared with the SDK in `edge.eval.stats`), verdicts and Best-of-K subsampling.

With 30-40 test problems per task a point estimate alone says little, so
every accuracy in the report carries a 95% interval, and every "ranker beats
baseline" claim is a paired bootstrap over problems (the two methods are
scored on the same candidates, so pairing removes problem difficulty).
"""

from __future__ import annotations

import numpy as np

from edge.eval.stats import Z95, bootstrap_ci, paired_difference, wilson

__all__ = [
    "MIN_PROBLEMS",
    "Z95",
    "bootstrap_ci",
    "k_grid",
    "paired_difference",
    "subsets",
    "verdict",
    "wilson",
]

# Below this many paired problems a bootstrap interval says nothing: with one
# problem every resample is that problem, and a single hit reads as a certain win.
MIN_PROBLEMS = 10


def verdict(low: float, high: float, n: int | None = None) -> str:
    """'wins' / 'loses' when the 95% interval of the difference excludes 0, else 'tie';
    'too few' when it rests on fewer than ``MIN_PROBLEMS`` problems (``n``)."""
    if n is not None and n < MIN_PROBLEMS:
        return "too few"
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
