"""The selection interface: given candidate subsets, which candidate does a method pick."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ranker_eval.methods.data import Pool


@dataclass
class MethodCost:
    """What a method costs (the paper's Table: parameters and CPU time)."""

    params: int  # parameters run to score a candidate, frozen ones included (0: training-free)
    train_s: float  # wall-clock training time
    score_s: float  # wall-clock time to score the whole test pool once


class Selector(Protocol):
    """Picks one candidate per problem from each problem's subset."""

    name: str  # as shown in the report

    def choose(self, pool: Pool, subsets: np.ndarray) -> np.ndarray:
        """(G, k) candidate indices -> (G,) chosen candidate index per problem."""
        ...


def argmax_in_subset(scores: np.ndarray, subsets: np.ndarray) -> np.ndarray:
    """Per problem, the subset member with the highest score (first on ties)."""
    rows = np.arange(subsets.shape[0])[:, None]
    best = np.argmax(scores[rows, subsets], axis=1)
    return subsets[np.arange(subsets.shape[0]), best]


@dataclass
class PointwiseSelector:
    """A method that scores every candidate on its own; subsets just mask the scores."""

    name: str  # method name
    scores: np.ndarray  # (G, K) higher is better

    def choose(self, pool: Pool, subsets: np.ndarray) -> np.ndarray:
        return argmax_in_subset(self.scores, subsets)
