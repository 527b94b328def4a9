"""The heads alone: which priors make distinct heads, and their Hedge mix."""

from __future__ import annotations

import numpy as np
import pytest

from edge.app.taste.heads import HeadState, hedge_mix, root_priors

GROUPS = {"last": (0, 4), "signals": (4, 6), "global": (6, 7)}


def test_a_head_is_kept_only_when_it_weighs_the_fits_parts_differently() -> None:
    priors = ({"signals": 100.0}, {"mean": 0.01}, {"last": 4.0, "signals": 4.0}, {})
    roots = root_priors(priors, ("last", "signals"), GROUPS, 7)
    # The mean-vector head equals the balanced one here (no mean part), and scaling
    # every part alike is another l2: both dropped; the balanced head comes after.
    assert len(roots) == 2
    np.testing.assert_array_equal(roots[0], [1, 1, 1, 1, 10, 10, 1])
    np.testing.assert_array_equal(roots[1], np.ones(7))
    # The first head is always kept, whatever it scales.
    assert len(root_priors(({"last": 4.0},), ("last",), {"last": (0, 4)}, 4)) == 1


def test_the_mix_follows_the_evidence_and_inf_keeps_the_best_head() -> None:
    share = hedge_mix([10.0, 11.0, 14.0], rate=1.0)
    assert share.sum() == pytest.approx(1.0) and np.all(np.diff(share) < 0)
    assert share[0] / share[1] == pytest.approx(np.e)
    np.testing.assert_array_equal(hedge_mix([3.0, 1.0, 2.0], rate=np.inf), [0, 1, 0])
    np.testing.assert_allclose(
        hedge_mix([1e6, 1e6 + 1], rate=1.0), [1, np.exp(-1)] / (1 + np.exp(-1))
    )


def test_a_head_grows_with_the_rows_and_decays_its_evidence() -> None:
    head = HeadState.zeros(np.ones(3), capacity=2, memory=4)
    head.h[:2] = [1.0, 2.0]
    head.grow(8, used=2)
    assert head.h.shape == (8,) and head.dir_rows.shape == (8, 4) and head.h[:2].tolist() == [1, 2]
    head.v = np.array([1.0, 0.0, -1.0])
    head.add_rows(2, np.array([[1, 1, 1], [2, 0, 1]], np.float32))
    assert head.h[2:4].tolist() == [0.0, 1.0]
    head.observe(2.0, 0.5)
    head.observe(2.0, 0.5)
    assert head.evidence == 3.0
