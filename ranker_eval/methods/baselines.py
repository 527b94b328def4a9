"""Training-free baselines: first sample, self-consistency, likelihood, oracle.

Greedy and beam search are not selections from the pool: they are separate
decodes stored with each problem, and the report shows them as flat lines.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from ranker_eval.methods.base import PointwiseSelector, argmax_in_subset
from ranker_eval.methods.data import Pool


@dataclass
class FirstSample:
    """The first candidate of the subset: what plain sampling would return."""

    name: str = "first sample"  # method name

    def choose(self, pool: Pool, subsets: np.ndarray) -> np.ndarray:
        return subsets[:, 0]


@dataclass
class SelfConsistency:
    """Majority vote over extracted answers; the first candidate with the winning answer.

    Responses with no extractable answer do not vote (unless none has one),
    so a pile of rambling responses cannot outvote one answered question.
    """

    name: str = "self-consistency"  # method name

    def choose(self, pool: Pool, subsets: np.ndarray) -> np.ndarray:
        chosen = np.empty(subsets.shape[0], dtype=np.int64)
        for g, subset in enumerate(subsets):
            answers = [pool.answers[g][int(i)] for i in subset]
            votes = Counter(a for a in answers if a)
            if not votes:
                chosen[g] = subset[0]
                continue
            top = max(votes.values())
            winner = next(a for a in answers if a and votes[a] == top)  # first to reach the top
            chosen[g] = subset[answers.index(winner)]
        return chosen


@dataclass
class Oracle:
    """Any correct candidate in the subset: the ceiling every selector is under."""

    name: str = "oracle"  # method name

    def choose(self, pool: Pool, subsets: np.ndarray) -> np.ndarray:
        return argmax_in_subset(pool.labels, subsets)


def max_likelihood(pool: Pool) -> PointwiseSelector:
    """The candidate with the highest mean token log-probability (a free confidence score)."""
    return PointwiseSelector("max mean log-prob", pool.logprobs)
