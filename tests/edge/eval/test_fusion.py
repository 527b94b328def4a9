from __future__ import annotations

import numpy as np
import pytest

from edge import ConfigError, FeatureError
from edge.eval.fusion import FusedScorer, minmax_fusion, minmax_scale, rank_fusion, ranks


def test_ranks_are_zero_best_and_ties_share_the_best_rank() -> None:
    assert ranks([0.1, 3.0, 2.0]).tolist() == [2, 0, 1]
    assert ranks([1.0, 1.0, 0.0]).tolist() == [0, 0, 2]
    assert ranks([[1.0, 2.0], [5.0, 4.0]]).tolist() == [[1, 0], [0, 1]]


def test_rank_fusion_takes_the_worse_rank() -> None:
    swift = np.array([10.0, 9.0, 8.0, 0.0])  # ranks 0 1 2 3
    rm = np.array([0.0, 3.0, 2.0, 1.0])  # ranks 3 0 1 2
    fused = rank_fusion(swift, rm)
    # Worse ranks 3, 1, 2, 3: candidate 1 wins, then 2; 0 and 3 tie on the worse
    # rank and 0 goes first because its better rank (0) beats 3's (2).
    assert int(np.argmax(fused)) == 1
    assert np.argsort(-fused, kind="stable").tolist() == [1, 2, 0, 3]


def test_rank_fusion_is_scale_free() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(7), rng.standard_normal(7)
    assert np.array_equal(rank_fusion(a, b), rank_fusion(1000 * a + 5, np.exp(b)))


def test_minmax_fusion_scales_and_weights() -> None:
    assert minmax_scale([2.0, 4.0, 3.0]).tolist() == [0.0, 1.0, 0.5]
    assert minmax_scale([7.0, 7.0]).tolist() == [0.5, 0.5]
    fused = minmax_fusion([0.0, 10.0], [1.0, 0.0], weight=0.25)
    assert fused.tolist() == pytest.approx([0.75, 0.25])
    batch = minmax_fusion(np.array([[0.0, 1.0], [3.0, 1.0]]), np.zeros((2, 2)))
    assert batch.shape == (2, 2)


def test_fused_scorer_combines_two_callables() -> None:
    def first(x: np.ndarray) -> np.ndarray:
        return x

    def second(x: np.ndarray) -> np.ndarray:
        return -x

    x = np.array([1.0, 2.0, 3.0])
    assert FusedScorer(first, second, "minmax", weight=1.0)(x).tolist() == [0.0, 0.5, 1.0]
    assert FusedScorer(first, second, "rank")(x).shape == (3,)
    with pytest.raises(ConfigError, match="method must be 'rank' or 'minmax'"):
        FusedScorer(first, second, "mean")  # type: ignore[arg-type]


def test_fusion_rejects_mismatched_or_bad_scores() -> None:
    with pytest.raises(FeatureError, match="shapes differ"):
        rank_fusion([1.0, 2.0], [1.0])
    with pytest.raises(FeatureError, match="non-finite"):
        minmax_fusion([np.nan, 1.0], [0.0, 1.0])
    with pytest.raises(ValueError):
        minmax_fusion([1.0], [1.0], weight=2.0)
