"""Content tastes: simulated users who care about what an answer *says*.

The study's first users (``users.py``) mostly like how an answer is laid out:
its length, its lists. Real users more often like what it talks about, in
which words, in what tone. The twelve judges below each score a text by its
content, of six kinds: a topic, a lexical field, certainty, tone,
specificity, and how the answer treats its reader (addressing them,
explaining why, not wasting words). None of them is a statistic an
on-device signal computes (``edge.runtime.signals``).

They were written, and split, before any representation was measured on
them, and are not tuned afterwards:

- the *development* half (``DEV``) is what the content study chooses the
  representation and the learner's settings on;
- the *held-out* half (``HELD_OUT``) is only reported, as a check of that
  choice on tastes it was not made on. The team measures again on content
  users that this project never sees, so neither half's word lists may shape
  the featuriser.

Every judge is a count or a rate of words from its own list (a few also
count patterns: numbers, names, units), so its score takes many values and
most prompts have one preferred answer or a small top set: the study needs
each judge *decisive* (not all K answers tied) on at least 40 test prompts
(``decisive_counts``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from ranker_personalize.users import DESCRIPTIONS, KINDS, SimUser

__all__ = [
    "CONTENT_DESCRIPTIONS",
    "CONTENT_JUDGES",
    "CONTENT_KINDS",
    "DEV",
    "HELD_OUT",
    "LEXICONS",
    "ContentUser",
    "judge_description",
    "judge_kind",
    "make_content_users",
]

Judge = Callable[[str], float]

_WORD = re.compile(r"[a-z0-9]+(?:['\u2019][a-z]+)?")


def _words(text: str) -> list[str]:
    """Lower-cased words, inner apostrophes kept ("don't" is one word)."""
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def _lexicon(words: str) -> frozenset[str]:
    return frozenset(words.split())


def _count(lexicon: frozenset[str]) -> Judge:
    """The number of words of ``lexicon`` an answer uses (repeats count)."""
    return lambda text: float(sum(w in lexicon for w in _words(text)))


def _rate(lexicon: frozenset[str], sign: float = 1.0) -> Judge:
    """Words of ``lexicon`` per 100 words (times ``sign``; 0 for an empty answer)."""

    def judge(text: str) -> float:
        words = _words(text)
        return sign * 100.0 * sum(w in lexicon for w in words) / len(words) if words else 0.0

    return judge


# -- development half -------------------------------------------------------------------
_OUTDOORS = _lexicon(
    "nature natural outdoor outdoors outside garden gardens gardening park parks tree trees "
    "plant plants flower flowers grass leaves soil sun sunny sunlight sunshine air fresh "
    "walk walks walking hike hikes hiking forest woods river lake sea beach ocean mountain "
    "mountains hill hills weather rain wind birds animals wildlife green field fields trail "
    "trails sky season seasons spring summer autumn winter"
)
_HEDGES = _lexicon(
    "may might could perhaps maybe possibly probably likely unlikely often usually generally "
    "typically sometimes occasionally tend tends seem seems somewhat fairly depends depending "
    "suggest suggests possible potentially roughly"
)
_WARM = _lexicon(
    "please thank thanks sorry glad happy hope hopefully understand understandable feel "
    "feeling feelings okay ok worry worried enjoy comfortable kind kindly gentle gently "
    "patient patience support supportive encourage encouraging welcome appreciate care "
    "caring calm relax proud"
)
_MONEY = _lexicon(
    "money cost costs costly price prices pricey budget budgets budgeting cheap cheaper "
    "cheapest expensive afford affordable spend spending spent save saving savings pay "
    "paying paid dollars dollar cents euros pounds free buy buying bought purchase deal "
    "deals discount discounts invest investing income salary cash financial finances bills "
    "bill fee fees"
)
_UNITS = _lexicon(
    "minute minutes hour hours day days week weeks month months year years percent cup cups "
    "gram grams kg pound pounds ounce ounces degree degrees km kilometres kilometers mile "
    "miles meter meters metre metres inch inches liter liters litre litres dollars euros"
)
_NUMBER_WORDS = _lexicon(
    "one two three four five six seven eight nine ten eleven twelve fifteen twenty thirty "
    "forty fifty hundred thousand million half dozen"
)
_READER = _lexicon("you your yours yourself yourselves you're you've you'll you'd")

_DIGITS = re.compile(r"\d+(?:[.,]\d+)?%?|\$\d+")
# A capitalised word that does not start a sentence or a line: a name (Tokyo, Python).
_NAME = re.compile(r"(?<=[a-z,;:)] )[A-Z][a-z]+")


def _specific(text: str) -> float:
    """Numbers (in digits or words), units and names: how concrete an answer is."""
    words = _words(text)
    return float(
        len(_DIGITS.findall(text))
        + sum(w in _NUMBER_WORDS or w in _UNITS for w in words)
        + len(_NAME.findall(text))
    )


# -- held-out half ----------------------------------------------------------------------
_HEALTH = _lexicon(
    "health healthy body bodies sleep sleeping rest resting energy exercise exercises "
    "muscle muscles heart brain breathe breathing breath stress stressed mental physical "
    "diet nutrition nutrients hydrated hydration tired fatigue pain injury injuries doctor "
    "posture eyes anxiety mood wellbeing well-being fitness strength immune blood"
)
_CAUTION = _lexicon(
    "careful carefully avoid avoiding risk risks risky safe safely safety danger dangerous "
    "warning warn caution cautious mistake mistakes problem problems harm harmful damage "
    "damaged injury hurt wrong never don't overdo beware check"
)
_UPBEAT = _lexicon(
    "fun enjoy enjoyable enjoying love lovely great exciting excited excitement amazing "
    "wonderful fantastic happy happiness joy rewarding delicious beautiful awesome perfect "
    "favorite favourite best brilliant fascinating inspiring satisfying success successful "
    "thrilled delightful"
)
_TIME = _lexicon(
    "time times minute minutes hour hours day days daily week weeks weekly month months "
    "monthly year years morning mornings evening evenings night tonight today tomorrow "
    "schedule scheduled routine routines before after first then next later finally soon "
    "early late start begin"
)
_REASONS = _lexicon(
    "because since therefore thus hence reason reasons why cause causes caused result "
    "results resulting leads lead means allows helps so consequently"
)
_FILLER = _lexicon(
    "thing things stuff really very just actually basically lot lots pretty quite some "
    "something anything everything somehow kinda sorta simply totally literally certain "
    "various etc"
)

CONTENT_JUDGES: dict[str, Judge] = {
    # development half
    "outdoors": _count(_OUTDOORS),
    "hedging": _rate(_HEDGES),
    "warm": _count(_WARM),
    "specific": _specific,
    "reader": _rate(_READER),
    "money": _count(_MONEY),
    # held-out half
    "health": _count(_HEALTH),
    "cautious": _count(_CAUTION),
    "upbeat": _count(_UPBEAT),
    "timely": _count(_TIME),
    "reasons": _rate(_REASONS),
    "plain": _rate(_FILLER, sign=-1.0),
}

DEV: tuple[str, ...] = ("outdoors", "hedging", "warm", "specific", "reader", "money")
HELD_OUT: tuple[str, ...] = ("health", "cautious", "upbeat", "timely", "reasons", "plain")

# The word list each judge counts (``specific`` also counts digits and names).
LEXICONS: dict[str, frozenset[str]] = {
    "outdoors": _OUTDOORS, "hedging": _HEDGES, "warm": _WARM,
    "specific": _NUMBER_WORDS | _UNITS, "reader": _READER, "money": _MONEY,
    "health": _HEALTH, "cautious": _CAUTION, "upbeat": _UPBEAT, "timely": _TIME,
    "reasons": _REASONS, "plain": _FILLER,
}  # fmt: skip

CONTENT_DESCRIPTIONS: dict[str, str] = {
    "outdoors": "prefers answers about nature and the outdoors (most such words)",
    "hedging": "prefers hedged answers (may, might, often, usually...: per 100 words)",
    "warm": "prefers a warm, encouraging tone (hope, enjoy, patient, don't worry...)",
    "specific": "prefers specific answers: numbers, units and names (most of them)",
    "reader": "prefers answers that address the reader (you, your: per 100 words)",
    "money": "prefers answers about money and cost (most such words)",
    "health": "prefers answers about health and the body (most such words)",
    "cautious": "prefers answers that warn about risks and mistakes (most such words)",
    "upbeat": "prefers an enthusiastic tone (fun, love, amazing, rewarding...)",
    "timely": "prefers answers about time and sequence (daily, minutes, first, then...)",
    "reasons": "prefers answers that explain why (because, so, helps, means: per 100 words)",
    "plain": "dislikes vague filler (things, stuff, really, just, very: per 100 words)",
}

CONTENT_KINDS: dict[str, str] = {
    "outdoors": "topic",
    "hedging": "certainty",
    "warm": "tone",
    "specific": "specificity",
    "reader": "reader",
    "money": "topic",
    "health": "topic",
    "cautious": "lexical field",
    "upbeat": "tone",
    "timely": "specificity",
    "reasons": "reader",
    "plain": "lexical field",
}


class ContentUser(SimUser):
    """A study user whose judge is one of ``CONTENT_JUDGES``: the same feedback model
    (thumbs and picks, ``noise``) as every study user."""

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """Judge scores of K candidate texts."""
        judge = CONTENT_JUDGES[self.judge]
        return np.array([judge(t) for t in texts], dtype=np.float64)


def make_content_users(
    names: Iterable[str] = (*DEV, *HELD_OUT), noise: float = 0.1
) -> list[ContentUser]:
    """One user per content judge named (default: all twelve)."""
    return [ContentUser(name, name, noise) for name in names]


def judge_kind(judge: str) -> str:
    """What kind of taste any study judge is, the study's own (``users.KINDS``) or a
    content one (``CONTENT_KINDS``); "" for an unknown name."""
    return KINDS.get(judge) or CONTENT_KINDS.get(judge, "")


def judge_description(judge: str) -> str:
    """What any study judge prefers, in words; the name itself for an unknown one."""
    return DESCRIPTIONS.get(judge) or CONTENT_DESCRIPTIONS.get(judge, judge)
