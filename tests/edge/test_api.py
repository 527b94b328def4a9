from __future__ import annotations

import numpy as np
import pytest

import edge
from edge import _errors
from edge.app.dataset import Group, GroupDataset


def test_every_public_name_resolves() -> None:
    for name in edge.__all__:
        assert getattr(edge, name) is not None, name
    with pytest.raises(AttributeError):
        edge.no_such_name  # noqa: B018


def test_one_error_hierarchy() -> None:
    for name in _errors.__all__:
        if name.endswith("Error"):
            assert issubclass(getattr(_errors, name), edge.RankerError), name
    for sub in ("ConnectionLostError", "DeadlineExceededError", "ServerError"):
        assert issubclass(getattr(edge, sub), edge.CentralError)
    assert issubclass(edge.InvalidRequestError, edge.CentralError)
    assert issubclass(edge.CorruptStoreError, edge.StoreError)
    assert issubclass(edge.FeatureError, ValueError)


def test_dataset_rejects_inconsistent_groups() -> None:
    inst, cand = np.zeros(8, np.float32), np.zeros((3, 8), np.float32)
    with pytest.raises(edge.FeatureError, match="mixes feature sizes"):
        GroupDataset.from_groups(
            [
                Group(inst, cand, np.array([1, 0, 0])),
                Group(np.zeros(4, np.float32), np.zeros((2, 4), np.float32), np.array([1, 0])),
            ]
        )
    with pytest.raises(edge.FeatureError, match="labels have shape"):
        GroupDataset.from_arrays(inst[None], cand[None], np.zeros((1, 2)))
    with pytest.raises(edge.FeatureError, match="dtype int64"):
        GroupDataset.from_arrays(np.zeros((1, 8), np.int64), cand[None], np.zeros((1, 3)))
    bad = cand.copy()
    bad[0, 0] = np.inf
    with pytest.raises(edge.FeatureError, match="inf"):
        GroupDataset.from_arrays(inst[None], bad[None], np.zeros((1, 3)))
    data = GroupDataset.from_groups(
        [Group(inst, cand, np.array([1, 0, 0])), Group(inst, cand[:2], np.array([0.5, 2.0]))]
    )
    assert sorted(b.kind for b in data.blocks) == ["binary", "graded"]
    assert data.num_candidates == 5 and data.feature_size == 8
