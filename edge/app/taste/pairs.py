"""Feedback as preference pairs within a shown set, and the Bradley-Terry loss on them.

Every kind of feedback becomes *preferences within one shown set*, pairs
"winner over loser" with a weight (``preference_pairs``):

- a pick: the chosen candidate over each rejected one (weight 1 each);
- scores: every higher-scored candidate over every lower-scored one (1 each);
- thumbs: each thumbed-up candidate over each thumbed-down one (1 each); a thumb
  with no opposite thumb in its set is compared with the set's unrated
  candidates instead, at ``implicit_weight`` in total (an up beats the typical
  unrated answer, a down loses to it).

Only differences within a set matter, so no intercept or centring is needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["Pairs", "Reaction", "pair_loss", "preference_pairs", "sigmoid"]


class Reaction(NamedTuple):
    """One feedback event on a set, without the set's features."""

    kind: str  # "thumb", "pick" or "score"
    candidate: int  # thumbed, chosen or scored candidate
    value: float | None  # thumb: 1.0 up / 0.0 down; score: the value; pick: None
    rejected: tuple[int, ...] = ()  # pick: the candidates passed over


class Pairs(NamedTuple):
    """Preferences as parallel arrays: ``winners[i]`` over ``losers[i]`` with ``weights[i]``."""

    winners: np.ndarray  # (N,) int64 candidate (or row) indices
    losers: np.ndarray  # (N,) int64
    weights: np.ndarray  # (N,) float64, > 0

    @classmethod
    def empty(cls) -> Pairs:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))

    @classmethod
    def concat(cls, parts: Iterable[Pairs]) -> Pairs:
        parts = list(parts)
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls._fields))

    def shifted(self, offset: int) -> Pairs:
        return Pairs(self.winners + offset, self.losers + offset, self.weights)


def preference_pairs(reactions: Sequence[Reaction], k: int, implicit_weight: float) -> Pairs:
    """The preferences a set's reactions state, over candidate indices 0..k-1.

    For thumbs and scores the latest reaction to a candidate wins, as in
    ``events_to_dataset``; every pick counts.
    """
    thumbs = {r.candidate: float(r.value or 0.0) for r in reactions if r.kind == "thumb"}
    scores = {r.candidate: float(r.value or 0.0) for r in reactions if r.kind == "score"}
    out: list[tuple[int, int, float]] = []
    for r in reactions:
        if r.kind == "pick":
            out += [(r.candidate, j, 1.0) for j in r.rejected]
    out += [(i, j, 1.0) for i, a in scores.items() for j, b in scores.items() if a > b]
    ups = [i for i, up in thumbs.items() if up > 0.5]
    downs = [i for i, up in thumbs.items() if up <= 0.5]
    out += [(i, j, 1.0) for i in ups for j in downs]
    unrated = [j for j in range(k) if j not in thumbs and j not in scores]
    if unrated and implicit_weight > 0:
        w = implicit_weight / len(unrated)
        if not downs:
            out += [(i, j, w) for i in ups for j in unrated]
        if not ups:
            out += [(j, i, w) for i in downs for j in unrated]
    if not out:
        return Pairs.empty()
    winners, losers, weights = zip(*out, strict=True)
    return Pairs(np.array(winners, np.int64), np.array(losers, np.int64), np.array(weights))


def pair_loss(pairs: Pairs, margins: np.ndarray) -> float:
    """Summed weighted Bradley-Terry loss of the pairs at these margins (winner minus
    loser score): ``sum w * log(1 + exp(-margin))``."""
    return float((pairs.weights * np.logaddexp(0.0, -margins)).sum())


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))
