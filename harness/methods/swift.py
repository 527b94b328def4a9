"""Hook for the SWIFT head (arXiv 2505.12225), implemented under another issue.

SWIFT scores a response from *per-token* hidden states (a gated sum of
token rewards). The candidate cache stores only last-token features, so a
SWIFT implementation plugs in here by registering a factory that receives
the train and test pools (texts and token ids are there to re-extract
per-token states) and returns per-candidate scores; the harness then scores
it on the same candidates, curves and intervals as every other method.
"""

from __future__ import annotations

from collections.abc import Callable

from harness.methods.base import MethodCost, PointwiseSelector
from harness.methods.data import Pool

# (train pool, test pool, seed) -> (scores on the test pool, cost)
SwiftFactory = Callable[[Pool, Pool, int], tuple[PointwiseSelector, MethodCost]]

_FACTORIES: dict[str, SwiftFactory] = {}


def register(name: str, factory: SwiftFactory) -> None:
    """Adds a per-token head (e.g. "SWIFT") to every subsequent harness run."""
    _FACTORIES[name] = factory


def registered() -> dict[str, SwiftFactory]:
    """The registered heads; empty until the SWIFT issue lands."""
    return dict(_FACTORIES)
