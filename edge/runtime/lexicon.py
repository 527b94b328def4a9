"""The on-device lexicon block: counts of fixed word categories per answer (numpy only).

A generic vector spreads a taste for a subject or a tone over hundreds of
directions, which a per-user head cannot find from tens of events
(docs/results/content-tastes.md). A *category* count makes such a taste one
direction: a user who likes answers about money, or answers that address the
reader, is one weight on one column. The categories are fixed, written without
looking at any user:

- Empath's 194 topical and emotional categories (Fast, Chen and Bernstein,
  CHI 2016; MIT licence, ``lexicon_data/LICENSE.empath``), unchanged;
- 15 generic linguistic categories (stance, engagement, cohesion, specificity:
  hedges, boosters, reader address, causal connectives...) and two patterns,
  ``@number`` and ``@name`` (``lexicon_data/linguistic_categories.tsv``).

The recipe (version 1; any language can compute it, ``examples/node`` does):

1. Replace U+2019 by ``'``. A *word* is a maximal run of Unicode letters and
   numbers (``[\\p{L}\\p{N}]``: Python's ``[^\\W_]``, see ``_WORD``), with inner
   apostrophes joining runs (``don't`` is one word); it is matched lower-cased.
2. A list entry that is not exactly one such word (``a.m.``, ``in-law``,
   ``so_much_pain``, an empty entry) is dropped; an entry listed twice in a
   category counts once.
3. A word counts once in every category that lists it; a word no category
   lists counts in the categories of its singular instead (``-ies`` -> ``-y``,
   else ``-es`` -> the word without it if listed, else ``-s`` -> the word
   without it; the first that some category lists).
4. ``@number``: words containing a decimal digit. ``@name``: words whose first
   character is an upper-case letter (``\\p{Lu}``), except the pronoun ``I``
   (``I``, ``I'm``, ``I'll``...) and a word that starts a sentence (the first
   word of the text, or one preceded since the previous word by ``.``, ``!``,
   ``?``, ``:`` or a line break).
5. The block is ``log(1 + count)`` per category, in ``category_names()`` order
   (Empath's file order, then the linguistic file's).

It is versioned like the signals (``LEXICON_VERSION``): a ranker records the
version it was trained on and refuses another, and any change above bumps it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from importlib import resources

import numpy as np

from edge.runtime.types import Candidate

__all__ = [
    "LEXICON_VERSION",
    "LEXICON_WIDTH",
    "candidate_lexicon",
    "category_counts",
    "category_names",
    "lexicon_block",
]

LEXICON_VERSION = 1
LEXICON_WIDTH = 211  # categories: 194 Empath + 15 linguistic + @number, @name

# One word: runs of letters and decimal digits, joined by inner apostrophes.
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_SENTENCE_END = re.compile(r"[.!?:\n]")
_FILES = ("empath_categories.tsv", "linguistic_categories.tsv")
_NUMBER, _NAME = "@number", "@name"


def _words_of(text: str) -> list[re.Match[str]]:
    return list(_WORD.finditer(text.replace("\u2019", "'")))


def _read(name: str) -> list[tuple[str, list[str]]]:
    """(category, entries) per line of a vendored category file; ``#`` lines skipped."""
    text = resources.files("edge.runtime").joinpath("lexicon_data", name).read_text("utf-8")
    rows = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name_, *entries = line.rstrip("\n").split("\t")
        rows.append((name_, entries))
    return rows


@lru_cache(maxsize=1)
def _lexicon() -> tuple[tuple[str, ...], dict[str, tuple[int, ...]]]:
    """The category names, and each listed word's categories (indices, ascending)."""
    names: list[str] = []
    members: dict[str, list[int]] = {}
    for file in _FILES:
        for category, entries in _read(file):
            index = len(names)
            names.append(category)
            if category.startswith("@"):
                continue  # a pattern, not a word list
            for entry in entries:
                word = entry.lower().replace("\u2019", "'")
                if not _WORD.fullmatch(word):
                    continue  # not one word: never matched
                listed = members.setdefault(word, [])
                if not listed or listed[-1] != index:
                    listed.append(index)
    if len(names) != LEXICON_WIDTH or _NUMBER not in names or _NAME not in names:
        raise RuntimeError(  # a damaged install: the package data is not what shipped
            f"edge.runtime.lexicon_data holds {len(names)} categories, expected {LEXICON_WIDTH}"
        )
    return tuple(names), {w: tuple(c) for w, c in members.items()}


def _singular_categories(word: str, members: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    """The categories of ``word``, or of its singular when it is not listed (step 3)."""
    found = members.get(word)
    if found is not None:
        return found
    if word.endswith("ies") and len(word) > 3:
        found = members.get(word[:-3] + "y")
        if found is not None:
            return found
    if word.endswith("es") and len(word) > 2:
        found = members.get(word[:-2])
        if found is not None:
            return found
    if word.endswith("s") and len(word) > 1:
        return members.get(word[:-1], ())
    return ()


def _is_name(match: re.Match[str], text: str, previous_end: int | None) -> bool:
    word = match.group(0)
    if not word[0].isupper() or word == "I" or word.startswith("I'"):
        return False
    if previous_end is None:
        return False  # the first word of the text starts a sentence
    return _SENTENCE_END.search(text, previous_end, match.start()) is None


def category_names() -> tuple[str, ...]:
    """The block's columns: Empath's categories in its file's order, then the
    linguistic file's (``@number`` and ``@name`` last)."""
    return _lexicon()[0]


def category_counts(texts: Iterable[str], singular: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(K, C) counts of every category (``category_names()`` order) and (K,) word counts
    of the texts. ``singular=False`` matches words exactly (no step 3; for studies)."""
    names, members = _lexicon()
    number, name = names.index(_NUMBER), names.index(_NAME)
    rows, lengths = [], []
    for raw in texts:
        text = raw.replace("\u2019", "'")
        counts = np.zeros(len(names))
        matches = _words_of(text)
        previous_end: int | None = None
        for match in matches:
            word = match.group(0).lower()
            found = _singular_categories(word, members) if singular else members.get(word, ())
            for index in found:
                counts[index] += 1.0
            if any(ch.isdecimal() for ch in word):
                counts[number] += 1.0
            if _is_name(match, text, previous_end):
                counts[name] += 1.0
            previous_end = match.end()
        rows.append(counts)
        lengths.append(len(matches))
    return np.array(rows, np.float64).reshape(-1, len(names)), np.array(lengths, np.float64)


def lexicon_block(texts: Sequence[str]) -> np.ndarray:
    """(K, C) float32: ``log(1 + count)`` of every category for each text (the recipe
    in the module doc)."""
    counts, _ = category_counts(texts)
    return np.log1p(counts).astype(np.float32)


def candidate_lexicon(candidates: Sequence[Candidate]) -> np.ndarray:
    """``lexicon_block`` of the candidates' texts (K, C)."""
    return lexicon_block([c.text for c in candidates])
