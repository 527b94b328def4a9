"""ListRanker and PointRanker from `edge`, trained on the train pool's features.

The paper trains on groups with at least one right and one wrong candidate
(only those carry a ranking signal); with tens of problems that is few
groups, so training runs a fixed number of steps (several epochs) instead of
the paper's single epoch over 100x more data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from edge.app.dataset import GroupDataset
from edge.training.loop import TrainConfig, train
from edge.training.rankers import build_ranker, count_parameters, make_config
from ranker_eval.methods.base import MethodCost, argmax_in_subset
from ranker_eval.methods.data import Pool

RANKER_NAMES = {"list": "ListRanker", "point": "PointRanker"}


def training_groups(pool: Pool, layer: int) -> GroupDataset:
    """Groups with mixed labels (the paper's filter); all groups if fewer than two are mixed."""
    inst, cand = pool.layer(layer)
    mixed = (pool.labels.max(axis=1) > 0) & (pool.labels.min(axis=1) < 1)
    rows = np.flatnonzero(mixed) if mixed.sum() >= 2 else np.arange(pool.size)
    return GroupDataset.from_arrays(inst[rows], cand[rows], pool.labels[rows])


@dataclass
class TrainedRanker:
    """A trained edge ranker as a selector over one stored layer."""

    name: str  # ListRanker / PointRanker
    module: torch.nn.Module  # the trained ranker
    layer: int  # index into the stored layers
    cost: MethodCost  # parameters and timings
    train_fit: float  # top-1 accuracy on its own training pool (over-fitting diagnostic)

    @torch.no_grad()
    def scores(self, pool: Pool, subsets: np.ndarray) -> np.ndarray:
        """(G, k) scores of each subset member (the ListRanker sees only the subset)."""
        inst, cand = pool.layer(self.layer)
        rows = np.arange(pool.size)[:, None]
        out = self.module(torch.from_numpy(inst), torch.from_numpy(cand[rows, subsets]))
        return out.numpy()

    def choose(self, pool: Pool, subsets: np.ndarray) -> np.ndarray:
        best = np.argmax(self.scores(pool, subsets), axis=1)
        return subsets[np.arange(pool.size), best]


def fit_ranker(kind: str, train_pool: Pool, layer: int, steps: int, seed: int) -> TrainedRanker:
    """Trains a ranker of `kind` on the train pool's features at stored layer `layer`."""
    data = training_groups(train_pool, layer)
    module = build_ranker(make_config(kind, data.feature_size), seed=seed)
    config = TrainConfig(epochs=1, min_steps=steps, seed=seed, batch_candidates=128)
    result = train(module, data, config)
    ranker = TrainedRanker(
        name=RANKER_NAMES[kind],
        module=module,
        layer=layer,
        cost=MethodCost(count_parameters(module), result.seconds, 0.0),
        train_fit=0.0,
    )
    full = np.broadcast_to(np.arange(train_pool.k), (train_pool.size, train_pool.k))
    picked = ranker.choose(train_pool, full)
    ranker.train_fit = float(train_pool.labels[np.arange(train_pool.size), picked].mean())
    return ranker


def timed_scoring(ranker: TrainedRanker, pool: Pool) -> float:
    """Seconds to score the whole test pool once (recorded as the ranker's scoring cost)."""
    full = np.broadcast_to(np.arange(pool.k), (pool.size, pool.k))
    start = time.perf_counter()
    argmax_in_subset(np.zeros((pool.size, pool.k)), full)
    ranker.scores(pool, full)
    return time.perf_counter() - start
