"""GroupDataset carries a candidate's optional parts (mean vectors, signals), checked by name."""

from __future__ import annotations

import numpy as np
import pytest

from edge import FeatureError
from edge.app.dataset import Block, Group, GroupDataset, Pair

D, K, S = 8, 3, 5
rng = np.random.default_rng(0)


def _group(
    mean: bool = False, signals: bool = False, labels: tuple[float, ...] = (1, 0, 0)
) -> Group:
    return Group(
        rng.standard_normal(D).astype(np.float32),
        rng.standard_normal((len(labels), D)).astype(np.float32),
        np.array(labels, np.float32),
        rng.standard_normal((len(labels), D)).astype(np.float32) if mean else None,
        rng.standard_normal((len(labels), S)).astype(np.float32) if signals else None,
    )


def test_from_arrays_keeps_the_optional_parts_without_copying() -> None:
    inst = rng.standard_normal((4, D)).astype(np.float16)
    cand = rng.standard_normal((4, K, D)).astype(np.float16)
    mean = rng.standard_normal((4, K, D)).astype(np.float16)
    signals = rng.standard_normal((4, K, S)).astype(np.float32)
    data = GroupDataset.from_arrays(
        inst, cand, np.zeros((4, K)), mean_candidates=mean, signals=signals
    )
    (block,) = data.blocks
    assert block.mean_candidates is mean and block.signals is signals
    assert block.parts == data.parts == ("last", "mean", "signals")
    assert data.num_signals == S
    plain = GroupDataset.from_arrays(inst, cand, np.zeros((4, K)))
    assert plain.parts == ("last",) and plain.num_signals == 0
    assert plain.blocks[0].mean_candidates is None and plain.blocks[0].signals is None


def test_mis_sized_parts_are_refused_naming_the_part_and_sizes() -> None:
    inst = np.zeros((2, D), np.float32)
    cand = np.zeros((2, K, D), np.float32)
    labels = np.zeros((2, K))
    with pytest.raises(
        FeatureError, match=r"mean_candidates have shape \(2, 3, 4\), expected \(2, 3, 8\)"
    ):
        GroupDataset.from_arrays(inst, cand, labels, mean_candidates=np.zeros((2, K, 4)))
    with pytest.raises(FeatureError, match=r"signals have shape \(2, 4, 5\), expected \(2, 3, S\)"):
        GroupDataset.from_arrays(inst, cand, labels, signals=np.zeros((2, 4, S)))
    with pytest.raises(FeatureError, match=r"signals have shape \(2, 3\), expected \(2, 3, S\)"):
        GroupDataset.from_arrays(inst, cand, labels, signals=np.zeros((2, K)))
    with pytest.raises(FeatureError, match="signals has dtype int64"):
        GroupDataset.from_arrays(inst, cand, labels, signals=np.zeros((2, K, S), np.int64))
    bad = np.zeros((2, K, S), np.float32)
    bad[1, 2, 0] = np.nan
    with pytest.raises(FeatureError, match=r"signals contains nan at index \(1, 2, 0\)"):
        GroupDataset.from_arrays(inst, cand, labels, signals=bad)
    with pytest.raises(FeatureError, match=r"group mean_candidates have shape \(3, 4\)"):
        GroupDataset.from_groups([Group(inst[0], cand[0], labels[0], np.zeros((K, 4)))])
    with pytest.raises(FeatureError, match=r"group signals have shape \(2, 5\), expected \(3, S\)"):
        GroupDataset.from_groups([Group(inst[0], cand[0], labels[0], signals=np.zeros((2, S)))])
    with pytest.raises(FeatureError, match="mixes signal blocks of \\[4, 5\\] values"):
        GroupDataset(
            [
                Block(
                    inst, cand, np.zeros((2, K), np.float32), "binary", None, np.zeros((2, K, 4))
                ),
                Block(
                    inst, cand, np.zeros((2, K), np.float32), "binary", None, np.zeros((2, K, S))
                ),
            ]
        )


def test_groups_stack_into_blocks_by_the_parts_they_carry() -> None:
    groups = [_group(), _group(mean=True, signals=True), _group(mean=True, signals=True)]
    data = GroupDataset.from_groups(groups)
    assert sorted(len(b) for b in data.blocks) == [1, 2]
    assert sorted(b.parts for b in data.blocks) == [("last",), ("last", "mean", "signals")]
    assert data.parts == ("last",)  # what every block has
    assert data.num_signals == S
    # groups() gives each group back with its parts
    full = [g for g in data.groups() if g.mean_candidates is not None]
    assert len(full) == 2 and len(list(data.groups())) == 3
    pairs = {tuple(g.candidates[0]): g for g in full}
    for original in groups[1:]:
        got = pairs[tuple(original.candidates[0])]
        np.testing.assert_array_equal(got.mean_candidates, original.mean_candidates)
        np.testing.assert_array_equal(got.signals, original.signals)


def test_pairs_carry_both_candidates_parts_or_neither() -> None:
    inst, a, b = rng.standard_normal((3, D)).astype(np.float32)
    ma, mb = rng.standard_normal((2, D)).astype(np.float32)
    sa, sb = rng.standard_normal((2, S)).astype(np.float32)
    full = Pair(inst, a, b, ma, mb, sa, sb)
    data = GroupDataset.from_groups(pairs=[full, Pair(inst, a, b)])
    by_parts = {blk.parts: blk for blk in data.blocks}
    assert set(by_parts) == {("last",), ("last", "mean", "signals")}
    blk = by_parts[("last", "mean", "signals")]
    assert blk.kind == "pair" and blk.mean_candidates is not None and blk.signals is not None
    np.testing.assert_array_equal(blk.mean_candidates[0], np.stack([ma, mb]))
    np.testing.assert_array_equal(blk.signals[0], np.stack([sa, sb]))
    np.testing.assert_array_equal(blk.labels[0], [1.0, 0.0])
    with pytest.raises(FeatureError, match="mean part for only one of its two candidates"):
        GroupDataset.from_groups(pairs=[Pair(inst, a, b, preferred_mean=ma)])
    with pytest.raises(FeatureError, match=r"pair signals parts have shapes \(5,\) and \(4,\)"):
        GroupDataset.from_groups(
            pairs=[Pair(inst, a, b, preferred_signals=sa, rejected_signals=sb[:4])]
        )
    with pytest.raises(FeatureError, match="mean_candidates have shape"):
        GroupDataset.from_groups(pairs=[Pair(inst, a, b, ma[:4], mb[:4])])
