"""Simulated users: a deterministic judge of taste plus noisy, app-shaped feedback.

A judge scores one candidate's *text* (higher = this user likes it more); the
user's preferred candidate among K is the judge's argmax (ties: every candidate
with the top score counts as preferred). How users react is the demo's model
(``edge.demo.users.TasteUser``, which ships in the wheel), so the study and
``ranker-edge demo`` simulate feedback the same way: a thumbs up or down on the
answer shown first, or a pick among two or three shown answers, and with
probability ``noise`` a reaction is random.

The nine tastes come in three kinds, and the kind decides what a fair reading of
a result is:

- *text statistics* that the on-device signals (``edge.runtime.signals``) compute
  almost exactly: ``concise`` and ``verbose`` (word count: the ``log_words``
  signal), ``lists`` and ``prose`` (list items: ``list_fraction`` and
  ``log_list_lines``). Two conflicting pairs: one answer cannot please both
  users of a pair. A head that reads the signals learns these by construction,
  so the study also runs every user without the signals block;
- *mixed*: ``concrete`` (numbers, partly ``digit_fraction``), ``formal`` (its
  casual half is contractions and '!', partly ``log_contractions`` and
  ``log_exclamations``) and ``short_formal`` (formal and short);
- *lexical or topical*, which no signal encodes: ``no_you`` (dislikes one word)
  and ``social`` (likes answers about other people). The hidden-state vectors
  are all a ranker has for these.

The judges were fixed before the study was run on them and are not tuned to it:
the team checks the learner on held-out users.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edge.demo.users import Reaction, TasteUser, word_count

__all__ = [
    "CONFLICTS",
    "DESCRIPTIONS",
    "JUDGES",
    "KINDS",
    "MIRRORS",
    "Reaction",
    "SimUser",
    "casual_markers",
    "example_markers",
    "formal_markers",
    "list_items",
    "make_users",
    "social_markers",
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
# Other people and being with them: family, friends, colleagues, communities.
_SOCIAL = frozenset(
    [
        "friend",
        "friends",
        "family",
        "families",
        "parent",
        "parents",
        "child",
        "children",
        "kid",
        "kids",
        "partner",
        "partners",
        "people",
        "person",
        "colleague",
        "colleagues",
        "coworker",
        "coworkers",
        "neighbour",
        "neighbours",
        "neighbor",
        "neighbors",
        "community",
        "communities",
        "team",
        "teammates",
        "together",
        "others",
        "someone",
        "everyone",
        "relationship",
        "relationships",
        "social",
        "mentor",
        "teacher",
        "teachers",
        "group",
        "groups",
        "club",
        "volunteers",
    ]
)
_EXAMPLE = re.compile(r"\b(?:for example|for instance|e\.g\.|such as)\b", re.IGNORECASE)


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


def social_markers(text: str) -> int:
    """Words about other people (family, friends, colleagues, communities)."""
    return sum(w.lower() in _SOCIAL for w in _WORD.findall(text))


def _word_hater(word: str) -> Judge:
    pattern = re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE)
    return lambda text: -float(len(pattern.findall(text)))


JUDGES: dict[str, Judge] = {
    "concise": lambda t: -float(word_count(t)),
    "verbose": lambda t: float(word_count(t)),
    "lists": lambda t: float(list_items(t)),
    "prose": lambda t: -float(list_items(t)),
    "formal": lambda t: float(formal_markers(t) - casual_markers(t)),
    "concrete": lambda t: float(example_markers(t)),
    "short_formal": lambda t: float(formal_markers(t) - casual_markers(t)) - word_count(t) / 15,
    "no_you": _word_hater("you"),
    "social": lambda t: float(social_markers(t)),
}

DESCRIPTIONS: dict[str, str] = {
    "concise": "prefers short answers (fewest words)",
    "verbose": "prefers long answers (most words); conflicts with concise",
    "lists": "prefers answers with a numbered or bulleted list (most list items)",
    "prose": "prefers answers without lists (fewest list items); conflicts with lists",
    "formal": "prefers a formal tone (formal words minus contractions, '!' and chatty words)",
    "concrete": "prefers answers that mention numbers or give an example",
    "short_formal": "combination: formal tone and short (formal score - words / 15)",
    "no_you": "dislikes the word 'you' (fewest occurrences): lexical",
    "social": "prefers answers about other people (family, friends, colleagues): topical",
}

# What kind of taste each judge is (see the module docstring).
KINDS: dict[str, str] = {
    "concise": "text statistic",
    "verbose": "text statistic",
    "lists": "text statistic",
    "prose": "text statistic",
    "formal": "mixed",
    "concrete": "mixed",
    "short_formal": "mixed",
    "no_you": "lexical",
    "social": "topical",
}

# The signals that compute (part of) a judge's score: where a head that reads the
# signals is handed the taste by construction.
MIRRORS: dict[str, tuple[str, ...]] = {
    "concise": ("log_words",),
    "verbose": ("log_words",),
    "lists": ("list_fraction", "log_list_lines"),
    "prose": ("list_fraction", "log_list_lines"),
    "formal": ("log_contractions", "log_exclamations"),
    "concrete": ("digit_fraction",),
    "short_formal": ("log_words", "log_contractions", "log_exclamations"),
    "no_you": (),
    "social": (),
}

# The conflicting pairs: a single ranker cannot please both users of a pair.
CONFLICTS: tuple[tuple[str, str], ...] = (("concise", "verbose"), ("lists", "prose"))


@dataclass(frozen=True)
class SimUser(TasteUser):
    """A study user: the demo's feedback model with one of this module's judges."""

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """Judge scores of K candidate texts."""
        judge = JUDGES[self.judge]
        return np.array([judge(t) for t in texts], dtype=np.float64)

    def prefers(self, texts: Sequence[str]) -> frozenset[int]:
        """The answers among ``texts`` this user likes best."""
        scores = self.scores(texts)
        return frozenset(int(i) for i in np.flatnonzero(scores == scores.max()))

    def react(
        self, texts: Sequence[str], order: Sequence[int], rng: np.random.Generator
    ) -> Reaction:
        """Feedback on answers shown in ``order`` (the app's ranking, best first), as
        ``TasteUser.react`` gives it, scored by this user's judge."""
        scores = self.scores(texts)
        if len(order) > 1 and rng.random() < self.pick_share:
            return self._pick(scores, order, rng)
        return self._thumb(scores, int(order[0]), rng)


def make_users(noise: float = 0.1) -> list[SimUser]:
    """The study's users, one per taste."""
    return [SimUser(name, name, noise) for name in JUDGES]
