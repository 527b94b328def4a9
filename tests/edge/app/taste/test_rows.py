"""The rows alone: deviations within a set, K-1 stored, products and the standardisation."""

from __future__ import annotations

import numpy as np
import pytest

from edge import FeatureError, TrainingError
from edge.app.taste.rows import Rows
from edge.runtime.parts import part_layout
from edge.runtime.signals import SIGNAL_NAMES

S = len(SIGNAL_NAMES)


def _rows(sets: int = 5, d: int = 6, seed: int = 0, **options: object) -> tuple[Rows, list]:
    rng = np.random.default_rng(seed)
    layout = part_layout(d, ("last", "signals"))
    rows = Rows(layout, global_column=True, refresh_block=2, **options)  # type: ignore[arg-type]
    raw = []
    for i in range(sets):
        k = 3 + i % 3
        last = rng.standard_normal((k, d)) + 50.0  # a large offset every answer shares
        signals, scores = rng.standard_normal((k, S)), rng.standard_normal(k)
        rows.add(rows.deviations(str(i), {"last": last, "signals": signals}, scores))
        raw.append((last, signals, scores))
    return rows, raw


def test_rows_are_deviations_from_their_set_and_products_read_only_k_minus_1_per_set() -> None:
    rows, raw = _rows()
    assert rows.count == sum(len(r[0]) for r in raw) and rows.num_stored == rows.count - 5
    assert rows.width == 6 + S + 1 and rows.global_column == rows.width - 1
    full = rows.full().astype(np.float64)
    expected = np.concatenate(
        [np.hstack([last, sig, scores[:, None]]) - np.hstack([last, sig, scores[:, None]]).mean(0)
         for last, sig, scores in raw]
    )  # fmt: skip
    np.testing.assert_allclose(full, expected, atol=1e-4)
    for start, k in zip(rows.firsts, [len(r[0]) for r in raw], strict=True):
        np.testing.assert_allclose(full[start : start + k].sum(0), 0, atol=1e-3)
    u = np.random.default_rng(1).standard_normal((rows.width, 2))
    np.testing.assert_allclose(rows.times(u), full @ u, rtol=1e-4, atol=1e-3)
    r = np.random.default_rng(2).standard_normal(rows.count)
    np.testing.assert_allclose(rows.stored.T @ rows.stored_weights(r), full.T @ r, atol=1e-2)
    np.testing.assert_array_equal(rows.offsets, np.concatenate([r[2] for r in raw]))
    assert rows.block_starts[:, 0].tolist() == rows.firsts[::2]  # every refresh_block-th set


def test_each_group_is_scaled_by_its_width_and_within_set_spread() -> None:
    rows, _ = _rows(sets=20, standardise_each=("signals",), variance_prior=0.0)
    scale, full = rows.scale(), rows.full().astype(np.float64)
    lo, hi = rows.spans["last"]
    n = rows.count - 20  # deviations summed: K-1 per set
    # A hidden-state part as a whole: one variance, the mean of its coordinates'.
    whole = (full[:, lo:hi] ** 2).sum() / (hi - lo) / n
    np.testing.assert_allclose(scale[lo:hi], 1 / np.sqrt(whole * (hi - lo)), rtol=1e-5)
    lo, hi = rows.spans["signals"]
    each = (full[:, lo:hi] ** 2).sum(0) / n  # the signals coordinate by coordinate
    np.testing.assert_allclose(scale[lo:hi], 1 / np.sqrt(each * (hi - lo)), rtol=1e-4)


def test_a_set_that_does_not_fit_is_refused_before_anything_is_kept() -> None:
    rows, _ = _rows(sets=2)
    count, scale = rows.count, rows.scale().copy()
    with pytest.raises(FeatureError, match="signals part has shape"):
        rows.deviations("bad", {"last": np.zeros((3, 6)), "signals": np.zeros((3, S + 1))})
    with pytest.raises(FeatureError, match=r"last part has shape \(3, 5\), expected \(K, 6\)"):
        rows.deviations("bad", {"last": np.zeros((3, 5))})
    with pytest.raises(FeatureError, match="'last' part is required"):
        rows.deviations("bad", {"signals": np.zeros((3, S))})
    assert rows.count == count and np.array_equal(rows.scale(), scale)
    with pytest.raises(TrainingError, match="'global' names u's column"):
        Rows({"last": 6, "global": 1})
    with pytest.raises(TrainingError, match="at least one block"):
        Rows({})


def test_the_layout_is_data_any_block_names_in_the_order_given() -> None:
    rows = Rows({"words": 3, "last": 2})
    assert rows.parts == ("words", "last") and rows.spans == {"words": (0, 3), "last": (3, 5)}
    new = rows.deviations("a", {"words": np.eye(3), "last": None})
    np.testing.assert_allclose(new.rows[:, :3], np.eye(3) - 1 / 3, atol=1e-6)
    assert not new.rows[:, 3:].any() and set(new.squares) == {"words"}
