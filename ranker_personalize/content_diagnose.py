"""Why content tastes learn slowly: four measurements on the development users only.

1. ``judge_feature``: the same learner and feedback with the judge's own score
   added as one more block (a single column). How fast a taste that the
   representation shows as one direction is learned: the bound no
   representation can beat with this feedback.
2. ``best_of_k``: the default representation, but the user picks the best of
   all K answers every event, without noise, rejecting only the strictly worse
   ones (ties are not preferences), against the study's feedback (a thumb on
   the first answer or a pick among two or three shown, noise 0.1).
3. ``ceiling_by_sets``: the full-label ceiling fitted on the first N train
   prompts only: how many exactly labelled prompts a representation needs.
4. ``oracle_words``: the hashed-words block with a hand-set weight of +1 on
   each word of the judge's own list (``content_users.LEXICONS``), no learning:
   what hash collisions leave of a perfectly known taste, per block width.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from ranker_personalize import metrics
from ranker_personalize.blockfit import ceiling_picks, replay
from ranker_personalize.content_study import Bank, Candidate
from ranker_personalize.content_users import LEXICONS, ContentUser
from ranker_personalize.users import Reaction, SimUser
from ranker_personalize.words import ContentSpec, content_block

__all__ = ["BestOfK", "diagnose"]


class BestOfK(ContentUser):
    """A content user who picks the best of all K answers, without noise; a set
    whose answers all tie gets no preference (a pick of one over nothing)."""

    def react(
        self, texts: Sequence[str], order: Sequence[int], rng: np.random.Generator
    ) -> Reaction:
        scores = self.scores(texts)
        best = int(np.argmax(scores))
        worse = tuple(int(j) for j in np.flatnonzero(scores < scores[best]))
        return Reaction("pick", best, rejected=worse)


def _rates(
    user: SimUser, test_scores: np.ndarray, picks: dict[int, np.ndarray]
) -> dict[int, float]:
    mask = metrics.decisive(test_scores)
    return {b: float(metrics.hits(test_scores, p)[mask].mean()) for b, p in picks.items()}


def _curve(
    user: SimUser, bank: Bank, candidate: Candidate, blocks: tuple[dict[str, Any], dict[str, Any]],
    seeds: Sequence[int], budgets: Sequence[int],
) -> dict[int, float]:  # fmt: skip
    train, test = blocks
    scores = np.stack([ContentUser(user.name, user.name).scores(t) for t in bank.test.texts])
    runs = [
        _rates(user, scores, replay(user, train, bank.train.texts, test, s, candidate.config(),
                                    budgets).picks)
        for s in seeds
    ]  # fmt: skip
    return {b: round(100 * float(np.mean([r[b] for r in runs])), 1) for b in budgets}


def diagnose(
    bank: Bank,
    default: Candidate,
    baseline: Candidate,
    names: Sequence[str],
    seeds: Sequence[int] = (0, 1, 2),
    sets: Sequence[int] = (25, 50, 100, 200),
    widths: Sequence[int] = (1024, 4096, 16384),
) -> dict[str, Any]:
    """The four measurements for the users ``names`` (development judges only)."""
    budgets = (10, 50, 200)
    out: dict[str, Any] = {"judge_feature": {}, "best_of_k": {}, "ceiling_by_sets": {},
                           "oracle_words": {}}  # fmt: skip
    base = bank.blocks(baseline.blocks)
    chosen = bank.blocks(default.blocks)
    for name in names:
        user = ContentUser(name, name)
        train_scores = np.stack([user.scores(t) for t in bank.train.texts])
        test_scores = np.stack([user.scores(t) for t in bank.test.texts])
        judged = Candidate(
            "judge", (*baseline.blocks, "judge"), standardise_each=("signals", "global", "judge")
        )
        blocks = ({**base[0], "judge": train_scores[..., None].astype(np.float32)},
                  {**base[1], "judge": test_scores[..., None].astype(np.float32)})  # fmt: skip
        out["judge_feature"][name] = _curve(user, bank, judged, blocks, seeds, budgets)
        out["best_of_k"][name] = {
            "study_feedback": _curve(user, bank, default, chosen, seeds, budgets),
            "best_of_k": _curve(BestOfK(name, name, 0.0), bank, default, chosen, seeds, budgets),
        }
        mask = metrics.decisive(test_scores)
        by_sets: dict[str, dict[int, float]] = {}
        for candidate, (train, test) in ((baseline, base), (default, chosen)):
            by_sets[candidate.name] = {}
            for n in [*sets, len(bank.train)]:
                picks = ceiling_picks(train_scores[:n], {k: v[:n] for k, v in train.items()},
                                      test, candidate.config())  # fmt: skip
                by_sets[candidate.name][n] = (
                    round(100 * float(metrics.hits(test_scores, picks)[mask].mean()), 1)
                    if picks is not None else float("nan")
                )  # fmt: skip
        out["ceiling_by_sets"][name] = by_sets
        out["oracle_words"][name] = {
            width: _oracle_words(name, bank.test.texts, test_scores, width) for width in widths
        }
    return out


def _oracle_words(
    name: str, texts: Sequence[Sequence[str]], scores: np.ndarray, width: int
) -> float:
    spec = ContentSpec(dim=width)
    weights = np.zeros(width)
    for word in LEXICONS[name]:
        h = zlib.crc32(word.replace("'", "").encode("utf-8"))
        weights[h & (width - 1)] += -1.0 if h & 0x80000000 else 1.0
    sign = -1.0 if name == "plain" else 1.0  # the one judge that dislikes its words
    picks = np.stack([content_block(t, spec) @ (sign * weights) for t in texts]).argmax(1)
    mask = metrics.decisive(scores)
    return round(100 * float(metrics.hits(scores, picks)[mask].mean()), 1)
