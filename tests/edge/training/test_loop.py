from __future__ import annotations

import numpy as np
import pytest
import torch

from edge import TrainingError
from edge.app.dataset import Block, Group, GroupDataset, Pair
from edge.runtime.signals import SIGNAL_NAMES
from edge.training.loop import TrainConfig, _split, evaluate_loss, top1_accuracy, train
from edge.training.rankers import build_ranker, make_config
from edge.training.synthetic import planted_dataset

D = 32
S = len(SIGNAL_NAMES)


@pytest.mark.parametrize("kind", ["list", "point"])
def test_one_epoch_learns_a_planted_signal(kind: str) -> None:
    data = planted_dataset(300, 8, D, seed=1)
    held_out = planted_dataset(200, 8, D, seed=2)
    model = build_ranker(make_config(kind, D))
    before_acc = top1_accuracy(model, held_out)
    before_loss = evaluate_loss(model, data)
    result = train(model, data, TrainConfig(epochs=1))  # the paper's one epoch
    assert result.epochs == 1 and result.steps > 0
    assert result.best_epoch is None and result.holdout_groups == 0  # all data, no stopping
    assert evaluate_loss(model, data) < 0.5 * before_loss
    accuracy = top1_accuracy(model, held_out)
    assert accuracy > 0.6 > 3 * (1 / 8)  # chance is 1/8
    assert accuracy > before_acc + 0.3


def test_same_seed_gives_bitwise_identical_weights() -> None:
    data = planted_dataset(40, 5, D, seed=3)

    def run(seed: int) -> dict[str, torch.Tensor]:
        model = build_ranker(make_config("list", D, dropout=0.1), seed=0)
        train(model, data, TrainConfig(seed=seed, batch_candidates=20, epochs=1))
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


# -- early stopping, the default ----------------------------------------------------------
@pytest.mark.parametrize("kind", ["list", "point"])
def test_default_training_stops_on_the_held_out_loss_and_restores_the_best_epoch(
    kind: str,
) -> None:
    data = planted_dataset(40, 8, D, seed=5)
    model = build_ranker(make_config(kind, D))
    config = TrainConfig(patience=4)
    assert config.early_stopping
    result = train(model, data, config)
    assert result.holdout_groups == 8  # 20% of 40 groups
    history = result.holdout_losses
    assert len(history) == result.epochs + 1  # before training, then after each epoch
    best = result.best_epoch
    assert best is not None and best >= 1  # training helped
    assert history[best] == min(history) < history[0]
    assert result.epochs == best + 4 or result.epochs == config.max_epochs  # patience ran out
    # the weights restored are those of the best epoch: their held-out loss is history[best]
    train_idx, held_idx = _split(data, config)  # type: ignore[misc]
    held_out = GroupDataset(
        [Block(*_rows(b, i)) for b, i in zip(data.blocks, held_idx, strict=True)]
    )
    assert evaluate_loss(model, held_out) == pytest.approx(history[best], rel=1e-5)
    assert sum(map(len, train_idx)) == 32 and not model.training
    # the same seed stops at the same epoch with bitwise the same weights
    twin = build_ranker(make_config(kind, D))
    again = train(twin, data, config)
    assert again.holdout_losses == history
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), twin.state_dict().values(), strict=True)
    )


def _rows(block: Block, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    return block.instructions[idx], block.candidates[idx], block.labels[idx], block.kind


@pytest.mark.parametrize("kind", ["list", "point"])
def test_training_that_never_helps_keeps_the_initial_weights_and_the_prior(kind: str) -> None:
    # A learning rate far too high: every epoch is worse than none, so early stopping
    # restores the initial weights, and a ranker built with a prior still ranks by it.
    data = planted_dataset(30, 6, D, signals=S, seed=0)
    prior = {"mean_logprob": 1.0}
    config = make_config(kind, D, signals=True, signal_prior=prior, relevance="linear")
    model = build_ranker(config, seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("signal_s")}
    result = train(model, data, TrainConfig(patience=3, lr=1.0))
    assert result.best_epoch == 0 and result.epochs == 3 and result.steps > 0
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in before)
    assert model.signals_fitted  # the standardisation is fit before training, and kept
    block = data.blocks[0]
    with torch.no_grad():
        scores = model(
            torch.from_numpy(block.instructions),
            torch.from_numpy(block.candidates),
            signals=torch.from_numpy(block.signals),  # type: ignore[arg-type]
        )
    logprob = torch.from_numpy(block.signals[..., SIGNAL_NAMES.index("mean_logprob")])  # type: ignore[index]
    assert torch.equal(scores.argsort(-1), logprob.argsort(-1))


def test_fixed_lengths_are_kept_exactly_as_callers_ask() -> None:
    data = planted_dataset(40, 8, D, seed=6)  # 128 candidates a step: 16 groups -> 3 steps
    model = build_ranker(make_config("point", D))
    fixed = train(model, data, TrainConfig(epochs=1, min_steps=10))  # the harness's budget
    assert (fixed.epochs, fixed.steps, fixed.holdout_groups) == (4, 12, 0)
    assert fixed.best_epoch is None and fixed.holdout_losses == []
    steps_only = train(model, data, TrainConfig(min_steps=7))  # the learner's "min_steps=30"
    assert not TrainConfig(min_steps=7).early_stopping and steps_only.epochs == 3
    assert train(model, data, TrainConfig(epochs=2)).steps == 6


def test_too_few_groups_to_hold_out_train_a_fixed_number_of_steps() -> None:
    data = planted_dataset(3, 4, D)  # 2 held out would leave 1 to train on
    model = build_ranker(make_config("point", D))
    result = train(model, data, TrainConfig(steps_without_holdout=12))
    assert result.holdout_groups == 0 and result.best_epoch is None
    assert result.steps == 12  # one group per... 3 groups of 4 fit in one step: 12 epochs


# -- several parts per candidate ----------------------------------------------------------
@pytest.mark.parametrize("kind", ["list", "point"])
@pytest.mark.parametrize("carrier", ["mean", "signals"])
def test_a_part_that_carries_the_signal_is_learnt_and_one_that_does_not_read_it_cannot(
    kind: str, carrier: str
) -> None:
    parts = {"mean": True, "signals": S}
    data = planted_dataset(300, 6, D, seed=7, planted=(carrier,), **parts)  # type: ignore[arg-type]
    held = planted_dataset(200, 6, D, seed=8, planted=(carrier,), **parts)  # type: ignore[arg-type]
    reads = {"vectors": ("last", "mean")} if carrier == "mean" else {"signals": True}
    model = build_ranker(make_config(kind, D, **reads))
    train(model, data, TrainConfig(epochs=3))
    blind = build_ranker(make_config(kind, D))  # the last-token vector: pure noise here
    train(blind, data, TrainConfig(epochs=3))
    assert top1_accuracy(model, held) > 0.8
    assert top1_accuracy(blind, held) < 0.35  # chance is 1/6


def test_signals_are_standardised_on_the_training_groups_once() -> None:
    data = planted_dataset(50, 4, D, signals=S, seed=9)
    model = build_ranker(make_config("point", D, signals=True))
    assert not model.signals_fitted
    result = train(model, data)
    held = sum(len(i) for i in _split(data, TrainConfig())[1])  # type: ignore[index]
    assert result.holdout_groups == held == 10
    train_idx = _split(data, TrainConfig())[0][0]  # type: ignore[index]
    rows = data.blocks[0].signals[train_idx].reshape(-1, S)  # type: ignore[index]
    np.testing.assert_allclose(model.signal_shift.numpy(), rows.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.signal_scale.numpy(), rows.std(0), rtol=1e-4)
    assert model.signal_scale.numpy().max() / model.signal_scale.numpy().min() > 1000
    # a ranker continuing from its own weights keeps its scaling
    shift = model.signal_shift.clone()
    train(model, planted_dataset(20, 4, D, signals=S, seed=10), TrainConfig(epochs=1))
    assert torch.equal(model.signal_shift, shift)


def test_a_dataset_lacking_a_part_the_ranker_reads_is_refused_by_name() -> None:
    with_mean = planted_dataset(6, 4, D, mean=True)
    plain = planted_dataset(4, 4, D)
    model = build_ranker(make_config("list", D, vectors=("last", "mean"), signals=True))
    with pytest.raises(TrainingError, match="reads 'mean_candidates' but 4 of the dataset's 10"):
        train(model, with_mean + plain)
    with pytest.raises(TrainingError, match="reads 'signals' but 6 of the dataset's 6 groups"):
        train(model, with_mean)
    narrow = planted_dataset(6, 4, D, mean=True, signals=3)
    with pytest.raises(TrainingError, match=f"signals have 3 columns, the ranker reads {S}"):
        train(model, narrow)
    # a ranker reading fewer parts than the data carries trains on what it reads
    full = planted_dataset(6, 4, D, mean=True, signals=S)
    assert train(build_ranker(make_config("point", D)), full, TrainConfig(epochs=1)).steps > 0
