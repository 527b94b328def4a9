"""Ranking losses over batches of equal-size groups (torch).

All functions take ``scores (B, K)`` from a ranker and return a scalar mean over
the groups that carry signal, plus the number of such groups so the trainer can
weight batches fairly. Groups that carry no signal (for the listwise loss: all
positive or all negative) contribute nothing instead of pulling scores together.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["listwise_kl", "mse", "pairwise_logistic", "pointwise_bce"]


def listwise_kl(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """KL(pi_y || softmax(s)) with target ``pi_y = y / sum(y)`` (the paper's listwise loss).

    Only groups with at least one positive and one negative are used: a group of
    equal labels says nothing about which candidate is better.
    """
    valid = (labels.sum(-1) > 0) & (labels.amax(-1) > labels.amin(-1))
    n = int(valid.sum())
    if n == 0:
        return scores.sum() * 0.0, 0
    y, s = labels[valid], scores[valid]
    target = y / y.sum(-1, keepdim=True)
    log_pred = F.log_softmax(s, dim=-1)
    # xlogy gives 0 * log 0 = 0 for candidates outside the target distribution.
    kl = (torch.xlogy(target, target) - target * log_pred).sum(-1)
    return kl.mean(), n


def pointwise_bce(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Binary cross-entropy of sigmoid(s) against 0/1 labels, per candidate."""
    loss = F.binary_cross_entropy_with_logits(scores, labels, reduction="none").mean(-1)
    return loss.mean(), int(scores.shape[0])


def mse(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean squared error against real-valued labels (ratings, rewards)."""
    return F.mse_loss(scores, labels, reduction="none").mean(-1).mean(), int(scores.shape[0])


def pairwise_logistic(scores: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Bradley-Terry loss ``-log sigmoid(s_preferred - s_rejected)``.

    ``scores`` is (B, 2): column 0 the candidate the user picked, column 1 the one
    passed over.
    """
    margin = scores[:, 0] - scores[:, 1]
    return F.softplus(-margin).mean(), int(scores.shape[0])
