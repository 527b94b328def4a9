"""What the feedback store records and hands back: shown sets and feedback events (numpy).

A *shown set* is what a user was shown: the instruction feature, the K
candidates' vectors (the last token's, and the mean over the response when
central sent it), their texts, the model's scalars and the on-device parts
(signals, lexicon) with their versions. A *feedback event* is one reaction to a set: a thumb on a
candidate, a pick of one over others, or a score. Events keep a reference to
their set, so the features training needs are stored once.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from edge.runtime.lexicon import LEXICON_VERSION, lexicon_block
from edge.runtime.scalars import Scalars
from edge.runtime.signals import SIGNALS_VERSION, text_signals

__all__ = ["FeedbackEvent", "FeedbackKind", "ShownSet"]

FeedbackKind = Literal["thumb", "pick", "score"]


@dataclass(frozen=True)
class ShownSet:
    """A candidate set as it was shown to a user."""

    user: str  # who saw it
    set_id: str  # the app's id for this set (unique per user)
    task: str  # which ranker it belongs to, e.g. "chat" or "math"
    instruction: np.ndarray = field(repr=False)  # (d,) as stored (float16 or float32)
    candidates: np.ndarray = field(repr=False)  # (K, d) as stored
    texts: tuple[str, ...] | None = None  # candidate texts, if the app stored them
    created: float = 0.0  # unix time it was recorded
    # (K, d) mean over each response's tokens, as stored; None when central sent none
    # or the set predates schema 2
    mean_candidates: np.ndarray | None = field(default=None, repr=False)
    # the model's numbers per candidate (all unknown for a set that predates schema 2)
    scalars: Scalars = field(default_factory=Scalars)
    signals: np.ndarray | None = field(default=None, repr=False)  # (K, S) as recorded
    signals_version: int | None = None  # SIGNALS_VERSION of ``signals``
    # (K, C) the lexicon block as recorded; None for a set that predates schema 3
    lexicon: np.ndarray | None = field(default=None, repr=False)
    lexicon_version: int | None = None  # LEXICON_VERSION of ``lexicon``

    @property
    def k(self) -> int:
        return int(self.candidates.shape[0])

    # The scalars' old spelling, one attribute per column (deprecated: ``scalars.<name>``).
    @property
    def num_tokens(self) -> Sequence[int | None] | None:
        return _old_column(self.scalars, "num_tokens")

    @property
    def cumulative_logprobs(self) -> Sequence[float | None] | None:
        return _old_column(self.scalars, "cumulative_logprobs")

    @property
    def mean_entropies(self) -> Sequence[float | None] | None:
        return _old_column(self.scalars, "mean_entropies")

    @property
    def finish_reasons(self) -> Sequence[str | None] | None:
        return _old_column(self.scalars, "finish_reasons")

    def signal_block(self) -> np.ndarray:
        """(K, S) signals of the current SIGNALS_VERSION: as stored when they are of
        this version, else recomputed from the stored texts and scalars."""
        if self.signals is not None and self.signals_version == SIGNALS_VERSION:
            return self.signals
        return text_signals(self.texts if self.texts is not None else [""] * self.k, self.scalars)

    def lexicon_block(self) -> np.ndarray | None:
        """(K, C) lexicon block of the current LEXICON_VERSION: as stored when it is of
        this version, else recomputed from the stored texts (a set recorded before
        schema 3, or under another version); None for a set recorded without texts,
        which says nothing about what its answers say (the learner fits the block
        on the sets that have it: zeros, no information, for the others)."""
        if self.lexicon is not None and self.lexicon_version == LEXICON_VERSION:
            return self.lexicon
        if self.texts is None:
            return None
        return lexicon_block(self.texts)


@dataclass(frozen=True)
class FeedbackEvent:
    """One reaction of a user to a shown set."""

    event_id: int  # increasing cursor; events(since=c) returns ids > c
    kind: FeedbackKind  # "thumb", "pick" or "score"
    candidate: int  # thumbed / chosen / scored candidate index within the set
    value: float | None  # thumb: 1.0 up / 0.0 down; score: the value; pick: None
    rejected: tuple[int, ...]  # pick: indices passed over; empty otherwise
    created: float  # unix time of the event
    shown: ShownSet = field(repr=False)  # the set it refers to, with its features
    signals_version: int | None = None  # SIGNALS_VERSION when recorded; None before schema 2

    @property
    def user(self) -> str:
        return self.shown.user

    @property
    def set_id(self) -> str:
        return self.shown.set_id


def _old_column(scalars: Scalars, name: str) -> Any:
    warnings.warn(
        f"ShownSet.{name} is deprecated: read ShownSet.scalars.{name}",
        DeprecationWarning,
        stacklevel=3,
    )
    return getattr(scalars, name)
