"""What `PersonalRanker` and `AsyncPersonalRanker` share, written once (no I/O loop).

The two front ends differ only in how they wait: one blocks, the other awaits
central and runs the store's writes and the fit in a worker thread. Everything
else lives here, the way ``edge.runtime.client_base`` serves both clients:
opening a user's store, registry and learner under ``home``, ranking with the
user's version (a new user: the first sample, or the global ranker of that
name under ``cold_start="global"``), recording a
shown set, feedback, learning with a hot swap, and rollback.

Each method here does the work synchronously; a front end's public method of
the same name without the underscore calls it (directly, or in a thread).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import numpy as np

from edge._errors import ConfigError
from edge.app.learning import LearnerSpec, LearnReport, UserLearner
from edge.app.registry import Registry
from edge.app.store import FeedbackStore
from edge.app.taste.config import TasteConfig
from edge.runtime.lexicon import candidate_lexicon
from edge.runtime.scoring import Ranker, Ranking
from edge.runtime.signals import candidate_signals
from edge.runtime.types import Candidate, FeatureIdentity, Generation

__all__ = ["ColdStart", "PersonalBase", "Shown"]

CentralT = TypeVar("CentralT")  # CentralClient or AsyncCentralClient
ColdStart = Literal["first_sample", "global"]  # what a user without a version is shown

STORE_FILE = "feedback.sqlite3"  # under home: every user's feedback
REGISTRY_DIR = "rankers"  # under home: every user's versions
# What `generate` asks central for unless told otherwise: both vectors and the mean
# entropy (representation v2, which the personal head reads; an older server sends
# the last-token vector alone), and the greedy answer as candidate 0, so the ranker
# can keep the model's best single guess where no sample beats it.
GENERATE_DEFAULTS: dict[str, Any] = {
    "vectors": ("last", "mean"),
    "mean_entropy": True,
    "greedy_first": True,
}


@dataclass(frozen=True)
class Shown:
    """A generation as shown to the user, ranked best first."""

    set_id: str  # names this candidate set in the feedback store
    generation: Generation  # the K candidates and their features
    order: tuple[int, ...]  # candidate indices, best first
    ranker_version: int | None  # which ranker version ranked them; None: no ranker yet

    @property
    def best(self) -> Candidate:
        """The candidate to show first."""
        return self.generation.candidates[self.order[0]]

    @property
    def ranked(self) -> list[Candidate]:
        return [self.generation.candidates[i] for i in self.order]


class PersonalBase(Generic[CentralT]):
    """One user's ranker of one name: store, registry, learner and the ranker in use."""

    def __init__(
        self,
        central: CentralT,
        home: str | Path,
        user: str,
        name: str = "chat",
        *,
        learner: LearnerSpec | None = None,
        cold_start: ColdStart = "first_sample",
    ) -> None:
        """``central``: the client that samples candidates (a front end's own kind);
        feedback and rankers live under ``home``. ``learner``: the config of the
        learner that learns this user's feedback (``edge.app.learning.LearnerSpec``),
        built once here. None is
        ``TasteConfig()``: a numpy head on top of the registry's global ranker of
        ``name`` (``edge.app.taste``); ``edge.training.LearnerConfig(...)`` trains
        a whole torch ranker per user, from ``LearnerConfig.base`` when given.
        A damaged current version is stepped over for the newest intact one, with
        a ``CorruptVersionWarning``.

        ``cold_start``: what a new user (no version of their own yet) is shown.
        ``"first_sample"`` (default): candidate 0, the greedy answer, until their
        first update, even when the registry holds a global ranker of ``name``;
        the global enters from the first update on, as the offset the user's own
        head is fitted on. So no user starts below the first sample, whatever the
        population the global was fitted on (one opposed to theirs included).
        ``"global"``: the global ranker ranks from the first answer (measured:
        no better on average, and clearly worse for users whose taste opposes
        the population's; docs/results/content-tastes.md)."""
        if cold_start not in ("first_sample", "global"):
            raise ConfigError(f"cold_start is 'first_sample' or 'global', got {cold_start!r}")
        self.cold_start = cold_start
        self.central = central
        self.home = Path(home).expanduser()
        self.home.mkdir(parents=True, exist_ok=True)
        self.user = user
        self.name = name
        self.store = FeedbackStore(self.home / STORE_FILE)
        self.registry = Registry(self.home / REGISTRY_DIR)
        # what learn() calls: built once, whichever learner it is
        self.learner: UserLearner = (learner or TasteConfig()).build(self.store, self.registry)
        self._ranker_is_global = False
        self._ranker: Ranker | None = None
        # the features of the generations shown by this object, recorded by the next learn
        self._identity: FeatureIdentity | None = None
        if self.registry.has(user, name):
            self._ranker = self.registry.open(user, name, fallback=True)
        elif cold_start == "global" and self.registry.has(None, name):
            # A new user ranks with the shared (global) ranker of this name until
            # their own first update, instead of showing the first sample.
            self._ranker = self.registry.open(None, name, fallback=True)
            self._ranker_is_global = True

    @property
    def ranker(self) -> Ranker | None:
        """What ``rank`` ranks with: the user's current version, the global ranker of
        ``name`` under ``cold_start="global"`` before their first update, or None
        (the first sample)."""
        return self._ranker

    @property
    def version(self) -> int | None:
        """The user's own ranker version in use; None before their first `learn`
        (while there is no ranker, or the shared global one ranks)."""
        if self._ranker is None or self._ranker_is_global:
            return None
        version = self._ranker.version
        return version if isinstance(version, int) else None

    def rank(
        self,
        generation: Generation,
        *,
        signals: np.ndarray | None = None,
        lexicon: np.ndarray | None = None,
    ) -> Ranking:
        """Orders a generation best first; index order while there is no ranker yet.

        The ranker is fed every input its graph declares: the candidates' vectors,
        their mean vectors, and the on-device parts of their texts, the signals and
        the lexicon (``signals``, ``lexicon`` when the caller has computed them
        already). A generation from another model or layer than the ranker
        recorded raises FeatureError."""
        if self._ranker is None:
            k = len(generation.candidates)
            return Ranking(order=np.arange(k), scores=np.zeros(k, np.float32))
        return self._ranker.rank_generation(generation, signals=signals, lexicon=lexicon)

    # -- the work each front end's method of the same name does -----------------------
    def _show(self, generation: Generation) -> Shown:
        signals = candidate_signals(generation.candidates)
        lexicon = candidate_lexicon(generation.candidates)
        ranking = self.rank(generation, signals=signals, lexicon=lexicon)
        if generation.identity is not None:
            self._identity = generation.identity
        set_id = uuid.uuid4().hex
        self.store.record_generation(
            self.user, set_id, generation, task=self.name, signals=signals, lexicon=lexicon
        )
        return Shown(set_id, generation, tuple(int(i) for i in ranking.order), self.version)

    def _thumbs(self, shown: Shown, candidate: int, up: bool) -> int:
        return self.store.thumbs(self.user, shown.set_id, candidate, up)

    def _pick(self, shown: Shown, chosen: int, rejected: Sequence[int] | None) -> int:
        return self.store.pick(self.user, shown.set_id, chosen, rejected)

    def _score(self, shown: Shown, candidate: int, value: float) -> int:
        return self.store.score(self.user, shown.set_id, candidate, value)

    def _learn(self) -> LearnReport:
        report = self.learner.learn(self.user, self.name, self._identity)
        if report.updated and report.version is not None:
            self._swap(report.version)
        return report

    def _rollback(self, to: int | None) -> int:
        info = self.registry.rollback(self.user, self.name, to=to)
        self._swap(info.version)
        return info.version

    def _swap(self, version: int) -> None:
        fresh = self.registry.open(self.user, self.name, version)
        if self._ranker is None or self._ranker_is_global:
            self._ranker = fresh
            self._ranker_is_global = False
        else:
            self._ranker.swap(fresh.session, version)

    def _close(self) -> None:
        self.store.close()
