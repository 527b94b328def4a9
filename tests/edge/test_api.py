from __future__ import annotations

import dataclasses
import importlib
import re
import sys

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


@pytest.mark.parametrize(
    ("package", "old", "new"),
    [
        ("edge.training", "SwiftRanker", "edge.swift.SwiftRanker"),
        ("edge.training", "LearnReport", "edge.app.LearnReport"),
        ("edge.training", "check_ranker", "edge.checks.check_ranker"),
        ("edge.training", "planted_token_dataset", "edge.swift.planted_token_dataset"),
        ("edge.app", "PersonalLearner", "edge.app.TasteLearner"),
        ("edge.app", "UpdateReport", "edge.app.LearnReport"),
        ("edge.app", "Part", "edge.runtime.Part"),
        ("edge.app.taste", "Block", "edge.runtime.Part"),
    ],
)
def test_moved_names_still_resolve_and_say_where_they_went(
    package: str, old: str, new: str
) -> None:
    home, _, name = new.rpartition(".")
    with pytest.warns(DeprecationWarning, match=f"is {re.escape(new)} now"):
        value = getattr(importlib.import_module(package), old)
    assert value is getattr(importlib.import_module(home), name)
    assert old not in importlib.import_module(package).__all__


def test_the_old_taste_modules_are_shims_of_the_taste_room() -> None:
    from edge.app import taste

    for module in ("edge.app.taste_fit", "edge.app.personal_learner"):
        sys.modules.pop(module, None)
        with pytest.warns(DeprecationWarning, match="moved"):
            importlib.import_module(module)
    from edge.app.personal_learner import PersonalLearner, UpdateReport
    from edge.app.taste_fit import TasteConfig, TasteFit

    assert (PersonalLearner, TasteConfig, TasteFit) == (
        taste.TasteLearner,
        taste.TasteConfig,
        taste.TasteFit,
    )
    assert UpdateReport is edge.LearnReport


def _configs() -> list[type]:
    from edge.app.taste import TasteConfig
    from edge.demo.config import DemoConfig
    from edge.eval.fusion import FusedScorer
    from edge.swift import SwiftConfig, SwiftTrainConfig
    from edge.training import LearnerConfig, ListRankerConfig, PointRankerConfig, TrainConfig

    return [
        TasteConfig,
        LearnerConfig,
        TrainConfig,
        ListRankerConfig,
        PointRankerConfig,
        SwiftConfig,
        SwiftTrainConfig,
        DemoConfig,
        FusedScorer,
    ]


def test_every_config_is_frozen_and_refuses_bad_values_with_one_error_type() -> None:
    from edge.training import make_config

    for config in _configs():
        assert dataclasses.is_dataclass(config) and config.__dataclass_params__.frozen, config
    bad = [
        lambda: edge.TasteConfig(l2=0),
        lambda: edge.TasteConfig(global_l2=-1.0),
        lambda: edge.LearnerConfig(kind="swift"),
        lambda: edge.LearnerConfig(replay_size=-1),
        lambda: edge.TrainConfig(optimizer="adam"),  # type: ignore[arg-type]
        lambda: make_config("list", 8, relevance="dot"),
        lambda: make_config("point", 8, vectors=("first",)),
        lambda: make_config("tree", 8),
        lambda: edge.SwiftConfig(feature_size=0),
    ]
    for make in bad:
        with pytest.raises(edge.ConfigError):
            make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        edge.TrainConfig().seed = 1  # type: ignore[misc]
