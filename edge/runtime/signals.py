"""On-device signals: a small, versioned block of numbers per candidate (numpy only).

A hidden-state vector says what the model was thinking, not how long the answer
is, whether it is a list, or how sure the model was. Those are cheap to read off
the text and the scalars central already sends (``edge.runtime.scalars``: token
count, cumulative log-probability, mean entropy, finish reason), and they are
exactly what many tastes and many correctness checks turn on. Rankers take them
as a separate named input (``signals``, shape (K, S)) so that a few numbers are
not drowned among hundreds of hidden dimensions.

The set is deliberately generic: length, layout, punctuation, character mix and
the model's own likelihood, nothing aimed at a particular user or judge. It is
*versioned*: a ranker records the ``SIGNALS_VERSION`` it was trained on, the
feedback store records it with every event, and any change to a definition below
must bump the version, so a ranker never silently reads signals computed another
way. Every value is finite, also for an empty text and for unknown scalars
(unknown counts read as 0; a missing entropy reads as 0 with ``has_entropy`` 0).

Two columns read the other candidates of the same set, the way self-consistency
does: an answer that many independent samples agree on is more often right,
and a user's taste often shows as closeness to the typical answer (or distance
from it). They need nothing but the K texts, so they are computed on device too.

Version 2 (version 1 lacked the last two), in column order (``SIGNAL_NAMES``);
"log" is ``log(1 + x)``:

====================  ===========================================================
log_chars             log of the number of characters
log_tokens            log of the generated token count (0 when unknown)
log_words             log of the number of words (runs of letters, digits, ``_``)
log_lines             log of the number of non-blank lines
list_fraction         fraction of non-blank lines that start a list item
                      (``-``, ``*``, ``+``, a bullet, or ``1.`` / ``1)``)
log_list_lines        log of the number of list-item lines
log_newlines          log of the number of newline characters
digit_fraction        digits / characters
upper_fraction        upper-case letters / letters
log_exclamations      log of the number of ``!``
log_questions         log of the number of ``?``
log_contractions      log of the number of words with an inner apostrophe (``don't``)
log_word_length       log of the mean word length in characters
distinct_words        distinct words / words (case-folded; 0 without words)
log_code_blocks       log of the number of fenced code blocks (pairs of triple backticks)
mean_logprob          cumulative log-probability / tokens, clipped to [-30, 0]
cumulative_logprob    sum of token log-probabilities, clipped to [-10000, 0]
mean_entropy          mean next-token entropy in nats (0 when unknown)
has_entropy           1 when the mean entropy is known, else 0
truncated             1 when generation hit the token limit, else 0
empty                 1 when the text is blank, else 0
agreement             fraction of the set's other candidates whose text is the same
                      after case-folding and dropping punctuation and spacing
similarity            mean word-set Jaccard similarity with the set's other candidates
====================  ===========================================================
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from edge._errors import FeatureError
from edge.runtime.scalars import Scalars
from edge.runtime.types import Candidate

__all__ = ["SIGNALS_VERSION", "SIGNAL_NAMES", "candidate_signals", "text_signals"]

SIGNALS_VERSION = 2

SIGNAL_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_tokens",
    "log_words",
    "log_lines",
    "list_fraction",
    "log_list_lines",
    "log_newlines",
    "digit_fraction",
    "upper_fraction",
    "log_exclamations",
    "log_questions",
    "log_contractions",
    "log_word_length",
    "distinct_words",
    "log_code_blocks",
    "mean_logprob",
    "cumulative_logprob",
    "mean_entropy",
    "has_entropy",
    "truncated",
    "empty",
    "agreement",
    "similarity",
)

_WORD = re.compile(r"\w+")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+\u2022]|\d{1,3}[.)])\s")
_CONTRACTION = re.compile(r"\b[^\W\d_]+['\u2019][^\W\d_]{1,3}\b")
_MIN_MEAN_LOGPROB, _MIN_CUMULATIVE_LOGPROB = -30.0, -10_000.0


def _log(count: float) -> float:
    return math.log1p(count)


def _text_row(text: str) -> list[float]:
    """The text-only signals of one candidate, in SIGNAL_NAMES order (first 15)."""
    chars = len(text)
    words = _WORD.findall(text)
    lines = [line for line in text.splitlines() if line.strip()]
    list_lines = sum(1 for line in lines if _LIST_ITEM.match(line))
    letters = sum(1 for ch in text if ch.isalpha())
    return [
        _log(chars),
        0.0,  # log_tokens: filled from the scalars
        _log(len(words)),
        _log(len(lines)),
        list_lines / len(lines) if lines else 0.0,
        _log(list_lines),
        _log(text.count("\n")),
        sum(ch.isdigit() for ch in text) / chars if chars else 0.0,
        sum(ch.isupper() for ch in text) / letters if letters else 0.0,
        _log(text.count("!")),
        _log(text.count("?")),
        _log(len(_CONTRACTION.findall(text))),
        _log(sum(map(len, words)) / len(words)) if words else 0.0,
        len({w.casefold() for w in words}) / len(words) if words else 0.0,
        _log(text.count("```") // 2),
    ]


def _likelihood(num_tokens: int | None, cumulative: float | None) -> tuple[float, float]:
    """(mean_logprob, cumulative_logprob), finite and clipped; 0 when unknown."""
    if cumulative is None:
        return 0.0, 0.0
    total = min(0.0, max(_MIN_CUMULATIVE_LOGPROB, float(cumulative)))
    mean = total / num_tokens if num_tokens else 0.0
    return max(_MIN_MEAN_LOGPROB, mean), total


# How a scalar column is named when its length is wrong.
_WHAT = {
    "num_tokens": "token counts",
    "cumulative_logprobs": "cumulative log-probabilities",
    "mean_entropies": "mean entropies",
    "finish_reasons": "finish reasons",
}


def _consensus(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(agreement, similarity) of each text with the others of its set; 0 for a set of one."""
    k = len(texts)
    if k < 2:
        return np.zeros(k), np.zeros(k)
    keys = [" ".join(w.casefold() for w in _WORD.findall(t)) for t in texts]
    words = [set(key.split()) for key in keys]
    agreement = np.array([sum(key == other for other in keys) - 1 for key in keys]) / (k - 1)
    similarity = np.zeros(k)
    for i in range(k):
        for j in range(i + 1, k):
            union = words[i] | words[j]
            jaccard = len(words[i] & words[j]) / len(union) if union else 1.0
            similarity[i] += jaccard
            similarity[j] += jaccard
    return agreement, similarity / (k - 1)


def text_signals(
    texts: Sequence[str],
    scalars: Scalars | None = None,
    *,
    num_tokens: Sequence[int | None] | None = None,
    cumulative_logprobs: Sequence[float | None] | None = None,
    mean_entropies: Sequence[float | None] | None = None,
    finish_reasons: Sequence[str | None] | None = None,
) -> np.ndarray:
    """Signals of K texts and their (optional) scalars: (K, S) float32.

    ``scalars`` holds one entry per text in each known column; the four
    keywords are the same columns given one by one (``Scalars``' fields), for
    callers that hold them apart. A column or an entry that is None means
    unknown. Finish reasons are "eos"/"length".
    """
    columns = Scalars(num_tokens, cumulative_logprobs, mean_entropies, finish_reasons)
    if scalars is not None and columns.known:
        raise FeatureError("give the scalars as scalars= or as columns, not both")
    known = scalars if scalars is not None else columns
    k = len(texts)
    for name, values in known.columns().items():
        if values is not None and len(values) != k:
            raise FeatureError(f"got {len(values)} {_WHAT[name]} for {k} texts")
    unknown = (None,) * k
    tokens = known.num_tokens or unknown
    cumulative = known.cumulative_logprobs or unknown
    entropy = known.mean_entropies or unknown
    finish = known.finish_reasons or unknown
    out = np.zeros((k, len(SIGNAL_NAMES)), dtype=np.float32)
    agreement, similarity = _consensus(texts)
    for i, text in enumerate(texts):
        mean_lp, total_lp = _likelihood(tokens[i], cumulative[i])
        ent = entropy[i]
        row = _text_row(text)
        row[1] = _log(tokens[i] or 0)
        out[i] = [
            *row,
            mean_lp,
            total_lp,
            ent if ent is not None else 0.0,
            0.0 if ent is None else 1.0,
            1.0 if finish[i] == "length" else 0.0,
            0.0 if text.strip() else 1.0,
            agreement[i],
            similarity[i],
        ]
    return out


def candidate_signals(candidates: Sequence[Candidate]) -> np.ndarray:
    """Signals of K candidates as they come from central: (K, S) float32."""
    return text_signals([c.text for c in candidates], Scalars.of(candidates))
