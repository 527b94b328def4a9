from __future__ import annotations

import numpy as np
import pytest
import torch

from edge import TrainingError
from edge.app.dataset import Group, GroupDataset, Pair
from edge.training.loop import TrainConfig, evaluate_loss, top1_accuracy, train
from edge.training.rankers import build_ranker, make_config
from edge.training.synthetic import planted_dataset

D = 32


@pytest.mark.parametrize("kind", ["list", "point"])
def test_one_epoch_defaults_learn_a_planted_signal(kind: str) -> None:
    data = planted_dataset(300, 8, D, seed=1)
    held_out = planted_dataset(200, 8, D, seed=2)
    model = build_ranker(make_config(kind, D))
    before_acc = top1_accuracy(model, held_out)
    before_loss = evaluate_loss(model, data)
    result = train(model, data)
    assert result.epochs == 1 and result.steps > 0
    assert evaluate_loss(model, data) < 0.5 * before_loss
    accuracy = top1_accuracy(model, held_out)
    assert accuracy > 0.6 > 3 * (1 / 8)  # chance is 1/8
    assert accuracy > before_acc + 0.3


def test_same_seed_gives_bitwise_identical_weights() -> None:
    data = planted_dataset(40, 5, D, seed=3)

    def run(seed: int) -> dict[str, torch.Tensor]:
        model = build_ranker(make_config("list", D, dropout=0.1), seed=0)
        train(model, data, TrainConfig(seed=seed, batch_candidates=20))
        return model.state_dict()

    first, second, other = run(7), run(7), run(8)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_pairs_and_graded_labels_train() -> None:
    rng = np.random.default_rng(0)
    direction = rng.standard_normal(D).astype(np.float32)
    pairs = []
    for _ in range(150):
        inst = rng.standard_normal(D).astype(np.float32)
        a, b = rng.standard_normal((2, D)).astype(np.float32)
        pairs.append(Pair(inst, a + direction, b))
    graded = [
        Group(
            rng.standard_normal(D).astype(np.float32),
            rng.standard_normal((4, D)).astype(np.float32),
            np.array([0.5, 2.0, 3.5, 1.0], dtype=np.float32),
        )
        for _ in range(20)
    ]
    data = GroupDataset.from_groups(graded, pairs)
    assert {b.kind for b in data.blocks} == {"graded", "pair"}
    model = build_ranker(make_config("point", D, relevance="linear"))
    result = train(model, data, TrainConfig(epochs=3))
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    pair_only = GroupDataset.from_groups(pairs=pairs[:50])
    assert top1_accuracy(model, pair_only) > 0.8


def test_float16_features_train_like_float32() -> None:
    data16 = planted_dataset(50, 6, D, seed=4, dtype=np.float16)
    assert data16.blocks[0].candidates.dtype == np.float16
    model = build_ranker(make_config("point", D))
    result = train(model, data16)
    assert np.isfinite(result.losses).all()


def test_progress_bar_flag_and_min_steps() -> None:
    data = planted_dataset(4, 4, D)
    model = build_ranker(make_config("point", D))
    result = train(model, data, TrainConfig(progress=True, min_steps=10, batch_candidates=16))
    assert result.steps >= 10


def test_wrong_feature_size_and_empty_data_are_rejected() -> None:
    model = build_ranker(make_config("list", D))
    with pytest.raises(TrainingError, match="ranker expects 32"):
        train(model, planted_dataset(4, 4, 16))
    with pytest.raises(TrainingError, match="nothing to train"):
        train(model, GroupDataset())
