"""Simulated users: a deterministic judge of taste plus noisy, app-shaped feedback.

A judge scores one candidate's *text* (higher = this user likes it more); the
user's preferred candidate among K is the judge's argmax (ties: every candidate
with the top score counts as preferred). Users react the way an app collects
feedback: a thumbs up/down on the answer they were shown, or a pick among two or
three shown answers, and they are not consistent: with probability ``noise`` a
reaction is random.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DESCRIPTIONS",
    "JUDGES",
    "Reaction",
    "SimUser",
    "casual_markers",
    "example_markers",
    "formal_markers",
    "list_items",
    "make_users",
    "word_count",
]

Judge = Callable[[str], float]

_LIST_LINE = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s+\S", re.MULTILINE)
_WORD = re.compile(r"[A-Za-z0-9']+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_CONTRACTION = re.compile(
    r"\b(?:i'm|you're|we're|they're|it's|that's|there's|let's|don't|can't|won't|isn't|"
    r"aren't|doesn't|didn't|you'll|i'll|we'll|you've|i've|we've|i'd|you'd|what's)\b",
    re.IGNORECASE,
)
_CASUAL = frozenset(
    [
        "hey",
        "hi",
        "wow",
        "awesome",
        "super",
        "cool",
        "fun",
        "stuff",
        "gonna",
        "wanna",
        "lots",
        "pretty",
        "really",
        "amazing",
        "exciting",
        "excited",
        "love",
        "totally",
        "okay",
        "ok",
        "yeah",
        "guys",
        "great",
    ]
)
_FORMAL = frozenset(
    [
        "therefore",
        "however",
        "furthermore",
        "additionally",
        "moreover",
        "consequently",
        "recommended",
        "essential",
        "ensure",
        "individuals",
        "regarding",
        "approximately",
        "significant",
        "significantly",
        "appropriate",
        "sufficient",
        "facilitate",
        "demonstrate",
        "utilize",
        "various",
        "thus",
    ]
)
_EXAMPLE = re.compile(r"\b(?:for example|for instance|e\.g\.|such as)\b", re.IGNORECASE)


def word_count(text: str) -> int:
    """Words in the answer: the 'short answers' user's measure."""
    return len(_WORD.findall(text))


def list_items(text: str) -> int:
    """Lines that start a numbered or bulleted list item."""
    return len(_LIST_LINE.findall(text))


def casual_markers(text: str) -> int:
    """Contractions, exclamation marks and chatty words."""
    words = [w.lower() for w in _WORD.findall(text)]
    return len(_CONTRACTION.findall(text)) + text.count("!") + sum(w in _CASUAL for w in words)


def formal_markers(text: str) -> int:
    """Words of a formal register."""
    return sum(w.lower() in _FORMAL for w in _WORD.findall(text))


def example_markers(text: str) -> int:
    """Distinct numbers plus phrases that introduce an example (capped at 3)."""
    return min(3, len(set(_NUMBER.findall(text))) + len(_EXAMPLE.findall(text)))


def _word_hater(word: str) -> Judge:
    pattern = re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE)
    return lambda text: -float(len(pattern.findall(text)))


JUDGES: dict[str, Judge] = {
    "concise": lambda t: -float(word_count(t)),
    "lists": lambda t: float(list_items(t)),
    "formal": lambda t: float(formal_markers(t) - casual_markers(t)),
    "concrete": lambda t: float(example_markers(t)),
    "no_you": _word_hater("you"),
    "short_formal": lambda t: float(formal_markers(t) - casual_markers(t)) - word_count(t) / 15,
}


DESCRIPTIONS: dict[str, str] = {
    "concise": "prefers short answers (fewest words)",
    "lists": "prefers answers with a numbered or bulleted list (most list items)",
    "formal": "prefers a formal tone (formal words minus contractions, '!' and chatty words)",
    "concrete": "prefers answers that mention numbers or give an example",
    "no_you": "dislikes the word 'you' (fewest occurrences)",
    "short_formal": "combination: formal tone and short (formal score - words / 15)",
}


@dataclass(frozen=True)
class Reaction:
    """One feedback event as the app records it."""

    kind: str  # "thumb" or "pick"
    candidate: int  # thumbed or chosen candidate
    up: bool = False  # thumb: up (True) or down
    rejected: tuple[int, ...] = ()  # pick: the other shown candidates


@dataclass(frozen=True)
class SimUser:
    """A user with a taste (judge), a way of giving feedback and some inconsistency."""

    name: str  # user id, also the judge's description
    judge: str  # key into JUDGES
    noise: float = 0.1  # probability that a reaction is random instead of the judge's
    pick_share: float = 0.5  # fraction of events that are picks (others: thumbs on the shown one)

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """Judge scores of K candidate texts."""
        fn = JUDGES[self.judge]
        return np.array([fn(t) for t in texts], dtype=np.float64)

    def react(
        self, texts: Sequence[str], order: Sequence[int], rng: np.random.Generator
    ) -> Reaction:
        """Feedback on a generation shown in ``order`` (the app's ranking, best first)."""
        scores = self.scores(texts)
        if rng.random() < self.pick_share:
            return self._pick(scores, order, rng)
        return self._thumb(scores, int(order[0]), rng)

    def _thumb(self, scores: np.ndarray, shown: int, rng: np.random.Generator) -> Reaction:
        # "Good" is relative to what this question's answers look like: better than the
        # median of its K, or the best when most tie; a fully tied set is a coin flip.
        if scores.max() == scores.min():
            up = bool(rng.random() < 0.5)
        else:
            up = bool(scores[shown] > np.median(scores) or scores[shown] == scores.max())
        if rng.random() < self.noise:
            up = bool(rng.random() < 0.5)
        return Reaction("thumb", shown, up=up)

    def _pick(self, scores: np.ndarray, order: Sequence[int], rng: np.random.Generator) -> Reaction:
        # The app shows its top answer next to one or two others drawn at random.
        size = int(rng.integers(2, 4))
        others = [int(i) for i in order[1:]]
        shown = [int(order[0]), *rng.choice(others, size=size - 1, replace=False).tolist()]
        best = [i for i in shown if scores[i] == max(scores[j] for j in shown)]
        chosen = int(rng.choice(best))
        if rng.random() < self.noise:
            chosen = int(rng.choice(shown))
        return Reaction("pick", chosen, rejected=tuple(i for i in shown if i != chosen))


def make_users(noise: float = 0.1) -> list[SimUser]:
    """The study's users, one per taste."""
    return [SimUser(name, name, noise) for name in JUDGES]
