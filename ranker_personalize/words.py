"""A content block computed on device: hashed words and word pairs (numpy only).

The content study's on-device candidate (``CONTENT_NAME`` ``"hashed-words"``).
The hidden-state vectors a ranker reads carry what the model was thinking at
one depth; a user who likes answers about money, or hedged ones, taught their
head next to nothing from them (issue 22). The words themselves are on the
device, so this block turns each answer's text into a fixed-width vector of
its words and adjacent word pairs, for a head to weigh "budget" or "might".

Measured (``docs/results/content-tastes.md``), it is not the recommended
default: at 1024 columns, hash collisions cost more than the words give
(an oracle weighting of a judge's own words reaches 34-54% top-1 at 1024
columns, 80-86% at 16,384), and wider blocks make the dense learner's rows
too wide to update in 10 ms. It stays here, with its recipe pinned, as the
measured alternative for an app whose central cannot send vectors.

It is a *recipe*, not a model: no vocabulary, no table, nothing learned, so
any language can compute it bit for bit (``docs/results/content-tastes.md``
has it step by step, and ``tests/ranker_personalize/test_words.py`` pins the
output for fixed texts). Version 1 (``CONTENT_NAME`` ``"hashed-words"``), for
each answer:

1. **Words.** Lower-case the text (Unicode simple lower-casing, Python's
   ``str.lower``), delete apostrophes (U+0027 and U+2019, so "don't" is
   "dont"), and take the maximal runs of letters and digits (Unicode
   categories L* and N*; Python's ``[^\\W_]+``). No stemming, no stop words.
2. **Keys.** Every word, and every pair of adjacent words joined by one
   space ("go to bed" gives "go", "to", "bed", "go to", "to bed").
3. **Counts.** Count each distinct key; its weight is ``1 + ln(count)``
   (sublinear: the tenth "you" adds little), times ``PAIR_WEIGHT`` for pairs.
4. **Hashing.** ``h = CRC-32(UTF-8 bytes of the key)`` (the zlib / PNG / IEEE
   802.3 CRC-32, unsigned 32-bit). The key adds ``+weight`` to column
   ``h mod CONTENT_DIM`` when bit 31 of ``h`` is 0, else ``-weight`` (signed
   hashing keeps collisions from adding up in one direction).
5. **Norm.** Divide the vector by its Euclidean norm (all zeros stays zeros):
   an answer's length is the signals' business, the block says *which* words.

The result is (K, ``CONTENT_DIM``) float32 per set of K answers. The learner
reads each set's answers as deviations from their set's mean, so words that
every answer of a set shares (the prompt's subject) cancel out; what is left
is what distinguishes one answer from the others.
"""

from __future__ import annotations

import itertools
import math
import re
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CONTENT_DIM",
    "CONTENT_NAME",
    "CONTENT_VERSION",
    "PAIR_WEIGHT",
    "ContentSpec",
    "content_block",
    "content_keys",
    "content_words",
]

CONTENT_NAME = "hashed-words"
CONTENT_VERSION = 1
CONTENT_DIM = 1024  # columns of the block (a power of two)
PAIR_WEIGHT = 1.0  # weight of a word pair relative to a word

_WORD = re.compile(r"[^\W_]+")
_APOSTROPHES = str.maketrans("", "", "'\u2019")


@dataclass(frozen=True)
class ContentSpec:
    """The recipe's parameters. The default is version 1; any other value is a
    different block (research only: a ranker records the name and version)."""

    dim: int = CONTENT_DIM  # columns (a power of two)
    pairs: bool = True  # adjacent word pairs as well as words
    pair_weight: float = PAIR_WEIGHT  # a pair's weight relative to a word's
    sublinear: bool = True  # 1 + ln(count) (False: the count itself)
    normalise: bool = True  # unit Euclidean norm per answer

    def __post_init__(self) -> None:
        if self.dim < 1 or self.dim & (self.dim - 1):
            raise ValueError(f"dim must be a power of two, got {self.dim}")


def content_words(text: str) -> list[str]:
    """Step 1: the answer's words, lower-cased, apostrophes removed."""
    return _WORD.findall(text.lower().translate(_APOSTROPHES))


def content_keys(text: str, pairs: bool = True) -> Counter[str]:
    """Steps 1-2: each word and adjacent pair of words, with its count."""
    words = content_words(text)
    keys = Counter(words)
    if pairs:
        keys.update(f"{a} {b}" for a, b in itertools.pairwise(words))
    return keys


def _vector(text: str, spec: ContentSpec) -> np.ndarray:
    out = np.zeros(spec.dim, np.float64)
    for key, count in content_keys(text, spec.pairs).items():
        weight = 1.0 + math.log(count) if spec.sublinear else float(count)
        if " " in key:
            weight *= spec.pair_weight
        h = zlib.crc32(key.encode("utf-8"))
        out[h & (spec.dim - 1)] += -weight if h & 0x80000000 else weight
    if spec.normalise:
        norm = float(np.sqrt(out @ out))
        if norm > 0:
            out /= norm
    return out


def content_block(texts: Sequence[str], spec: ContentSpec | None = None) -> np.ndarray:
    """The content block of K answers: (K, dim) float32 (see the module doc)."""
    spec = spec or ContentSpec()
    if not texts:
        return np.zeros((0, spec.dim), np.float32)
    return np.stack([_vector(t, spec) for t in texts]).astype(np.float32)
