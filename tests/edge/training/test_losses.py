from __future__ import annotations

import math

import torch

from edge.training.losses import listwise_kl, mse, pairwise_logistic, pointwise_bce


def test_listwise_skips_groups_without_both_labels() -> None:
    scores = torch.tensor([[1.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    loss, n = listwise_kl(scores, labels)
    assert n == 1
    expected = -torch.log_softmax(scores[0], -1)[0]
    assert torch.isclose(loss, expected)


def test_listwise_is_zero_when_prediction_matches_target() -> None:
    labels = torch.tensor([[1.0, 1.0, 0.0]])
    scores = torch.tensor([[0.0, 0.0, -1e4]])
    loss, _ = listwise_kl(scores, labels)
    assert float(loss) < 1e-6


def test_pairwise_prefers_larger_margin() -> None:
    good, _ = pairwise_logistic(torch.tensor([[3.0, 0.0]]))
    bad, _ = pairwise_logistic(torch.tensor([[0.0, 3.0]]))
    assert float(good) < math.log(2) < float(bad)


def test_pointwise_and_mse_values() -> None:
    bce, n = pointwise_bce(torch.zeros(2, 2), torch.ones(2, 2))
    assert n == 2 and math.isclose(float(bce), math.log(2), rel_tol=1e-6)
    err, _ = mse(torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 1.0]]))
    assert math.isclose(float(err), 2.5)
