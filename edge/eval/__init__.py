"""Evaluation helpers shared by the demo and the studies: no torch.

- ``stats``: Wilson intervals and paired bootstrap differences;
- ``fusion``: combining two scorers (worse-of-two ranks, min-max average).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge._lazy import lazy_exports

if TYPE_CHECKING:
    from edge.eval.fusion import (
        FusedScorer,
        FusionMethod,
        minmax_fusion,
        minmax_scale,
        rank_fusion,
        ranks,
    )
    from edge.eval.stats import (
        Z95,
        bootstrap_ci,
        paired_difference,
        wilson,
    )

# public name -> the module that defines it (imported on first use)
_EXPORTS: dict[str, str] = {
    "FusedScorer": "edge.eval.fusion",
    "FusionMethod": "edge.eval.fusion",
    "Z95": "edge.eval.stats",
    "bootstrap_ci": "edge.eval.stats",
    "minmax_fusion": "edge.eval.fusion",
    "minmax_scale": "edge.eval.fusion",
    "paired_difference": "edge.eval.stats",
    "rank_fusion": "edge.eval.fusion",
    "ranks": "edge.eval.fusion",
    "wilson": "edge.eval.stats",
}

__all__ = [
    "Z95",
    "FusedScorer",
    "FusionMethod",
    "bootstrap_ci",
    "minmax_fusion",
    "minmax_scale",
    "paired_difference",
    "rank_fusion",
    "ranks",
    "wilson",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
