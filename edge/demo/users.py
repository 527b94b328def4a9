"""Simulated users with a taste, for the demo's personalization part.

A user's taste is a *judge*: a function of an answer's text, higher is better
liked. Among K answers the user prefers the judge's argmax; every answer tied
at the top counts as preferred, so "agreement with a taste" is the share of
prompts whose chosen answer is one of them.

The demo's two users have opposite tastes on the same prompts: "concise"
likes the fewest words, "detailed" the most. One answer cannot please both,
so a single ranker cannot serve them; two personal rankers can. Word count is
among the on-device signals (``log_words``), so these tastes are the easy kind
by construction. A third user, "hedged", has a *content* taste: answers that
sound unsure (hedging words such as "may", "perhaps", "usually" per word),
which no signal computes; the on-device lexicon (``edge.runtime.lexicon``) has
a category of hedges, so the head can find it in tens of events. The
personalization study (``ranker_personalize/``) measures many more.

Users react the way an app collects feedback: a thumbs up or down on the
answer shown first, or a pick among two or three shown answers, and with
probability ``noise`` a reaction is random (people are not consistent).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "JUDGES",
    "Reaction",
    "TasteUser",
    "agreement",
    "expected_random_agreement",
    "hedge_rate",
    "preferred",
    "word_count",
]

Judge = Callable[[str], float]

_WORD = re.compile(r"[A-Za-z0-9']+")


def word_count(text: str) -> int:
    """Words in an answer: runs of letters, digits and apostrophes."""
    return len(_WORD.findall(text))


# Words that soften a claim: the "hedged" user's taste (written for the demo; the
# lexicon's own list of hedges is longer and not the same).
_HEDGES = frozenset((
    "may", "might", "could", "perhaps", "maybe", "possibly", "probably", "usually", "often",
    "generally", "typically", "sometimes", "likely", "unlikely", "seems", "seem", "somewhat",
    "depends", "depending",
))  # fmt: skip


def hedge_rate(text: str) -> float:
    """Hedging words per word of an answer (0 for an empty one)."""
    words = [w.lower() for w in _WORD.findall(text)]
    return sum(w in _HEDGES for w in words) / len(words) if words else 0.0


JUDGES: dict[str, Judge] = {
    "concise": lambda text: -float(word_count(text)),  # the fewer words the better
    "detailed": lambda text: float(word_count(text)),  # the more words the better
    "hedged": hedge_rate,  # a content taste: the more hedging per word the better
}


def preferred(texts: Sequence[str], judge: Judge) -> frozenset[int]:
    """Indices of the answers the judge scores highest (all of them when tied)."""
    scores = [judge(text) for text in texts]
    best = max(scores)
    return frozenset(i for i, score in enumerate(scores) if score == best)


def agreement(
    picks: Sequence[int], answer_sets: Sequence[Sequence[str]], judge: Judge
) -> list[bool]:
    """Per prompt: whether the picked answer is one the judge prefers."""
    return [pick in preferred(texts, judge) for pick, texts in zip(picks, answer_sets, strict=True)]


def expected_random_agreement(answer_sets: Sequence[Sequence[str]], judge: Judge) -> float:
    """How often a uniformly random pick agrees with the judge, in expectation (exact)."""
    shares = [len(preferred(texts, judge)) / len(texts) for texts in answer_sets]
    return sum(shares) / len(shares) if shares else float("nan")


@dataclass(frozen=True)
class Reaction:
    """One feedback event, as the app records it."""

    kind: str  # "thumb" (on the answer shown first) or "pick" (among those shown)
    candidate: int  # the thumbed or chosen answer
    up: bool = False  # thumb: up or down
    rejected: tuple[int, ...] = ()  # pick: the other answers shown


@dataclass(frozen=True)
class TasteUser:
    """A simulated user: a judge, a way of giving feedback, and some inconsistency."""

    name: str  # user id in the feedback store
    judge: str  # key into JUDGES
    noise: float = 0.1  # probability that a reaction is random instead of the judge's
    pick_share: float = 0.5  # fraction of events that are picks; the rest are thumbs

    def prefers(self, texts: Sequence[str]) -> frozenset[int]:
        """The answers among `texts` this user likes best."""
        return preferred(texts, JUDGES[self.judge])

    def react(
        self, texts: Sequence[str], order: Sequence[int], rng: np.random.Generator
    ) -> Reaction:
        """Feedback on answers shown in `order` (the app's ranking, best first)."""
        scores = np.array([JUDGES[self.judge](t) for t in texts])
        if len(order) > 1 and rng.random() < self.pick_share:
            return self._pick(scores, order, rng)
        return self._thumb(scores, int(order[0]), rng)

    def _thumb(self, scores: np.ndarray, shown: int, rng: np.random.Generator) -> Reaction:
        # "Good" is relative to this prompt's answers: above their median, or the best.
        if scores.max() == scores.min():
            up = bool(rng.random() < 0.5)
        else:
            up = bool(scores[shown] > np.median(scores) or scores[shown] == scores.max())
        if rng.random() < self.noise:
            up = bool(rng.random() < 0.5)
        return Reaction("thumb", shown, up=up)

    def _pick(self, scores: np.ndarray, order: Sequence[int], rng: np.random.Generator) -> Reaction:
        # The app shows its top answer next to one or two others drawn at random.
        others = [int(i) for i in order[1:]]
        size = min(len(others), int(rng.integers(1, 3)))
        shown = [int(order[0]), *(int(i) for i in rng.choice(others, size=size, replace=False))]
        top = max(scores[i] for i in shown)
        chosen = int(rng.choice([i for i in shown if scores[i] == top]))
        if rng.random() < self.noise:
            chosen = int(rng.choice(shown))
        return Reaction("pick", chosen, rejected=tuple(i for i in shown if i != chosen))
