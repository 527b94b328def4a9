"""The few-call API an app uses: generate, rank, show, record feedback, learn.

One `PersonalRanker` is one user's ranker of one name ("chat", "math", ...)
over one central model. Feedback goes to a SQLite store and rankers to a
versioned registry, both under `home`; several users and several ranker names
can share the same home.

    central = CentralClient("127.0.0.1:50051")
    me = PersonalRanker(central, home="~/.ranker", user="alice", name="math")
    shown = me.generate("Which number is larger, 47 or 74?", k=8)
    print(shown.best.text)                  # the ranker's pick (first sample until trained)
    me.thumbs(shown, shown.best.index, up=False)
    me.learn()                              # fit, compose the ONNX ranker, hot-swap

Learning goes through one seam (``edge.app.learning``): ``learner=`` takes a
learner's config, which builds the learner once. By default (``TasteConfig``,
``edge.app.taste``) it needs no torch: a small per-user head over the
candidates' vectors and on-device signals, fitted with numpy on top of the
global ranker of the same name when the registry has one, in milliseconds per
event. ``learner=LearnerConfig(...)`` (``edge.training``, needs torch) instead
trains a whole List/Point ranker per user; this module never names it.

Each saved ranker records the identity of the features it learned from (the
model's name and weights checksum, the layer: ``Generation.identity`` of the
generations this object showed), so ranking a generation from another model or
layer raises FeatureError instead of ranking it by features it never saw.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

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

if TYPE_CHECKING:
    from edge.runtime.client import CentralClient, Prompt

__all__ = ["ColdStart", "PersonalRanker", "Shown"]

ColdStart = Literal["first_sample", "global"]  # what a user without a version is shown

STORE_FILE = "feedback.sqlite3"
REGISTRY_DIR = "rankers"


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


class PersonalRanker:
    """One user's ranker: ranks with onnxruntime, learns from that user's feedback only."""

    def __init__(
        self,
        central: CentralClient,
        home: str | Path,
        user: str,
        name: str = "chat",
        *,
        learner: LearnerSpec | None = None,
        cold_start: ColdStart = "first_sample",
    ) -> None:
        """``learner``: the config of the learner that learns this user's feedback
        (``edge.app.learning.LearnerSpec``), built once here. None is
        ``TasteConfig()``: a numpy head on top of the registry's global ranker of
        ``name`` (``edge.app.taste``); ``edge.training.LearnerConfig(...)`` trains
        a whole torch ranker per user, from ``LearnerConfig.base`` when given.

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

    def generate(self, prompt: Prompt, k: int = 8, **options: Any) -> Shown:
        """Samples K candidates from central, ranks them, and records them as shown.

        Unless ``options`` say otherwise, central is asked for both vectors and the
        mean entropy (representation v2), which the personal head reads; a server
        that predates them sends the last-token vector alone and the head does
        without the rest. Candidate 0 is the greedy answer (``greedy_first``), so
        the ranker can keep the model's best single guess where no sample beats
        it; an older server samples it like the others.
        """
        options.setdefault("vectors", ("last", "mean"))
        options.setdefault("mean_entropy", True)
        options.setdefault("greedy_first", True)
        generation = self.central.generate(prompt, k, **options)
        return self.show(generation)

    def show(self, generation: Generation) -> Shown:
        """Ranks a generation the app already has and records it as shown (its
        on-device parts, the signals and the lexicon, computed once, for both)."""
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

    def thumbs(self, shown: Shown, candidate: int, *, up: bool) -> int:
        """Thumbs up or down on one shown candidate; returns the event id."""
        return self.store.thumbs(self.user, shown.set_id, candidate, up)

    def pick(self, shown: Shown, chosen: int, rejected: Sequence[int] | None = None) -> int:
        """The user preferred `chosen` over `rejected` (default: all other candidates)."""
        return self.store.pick(self.user, shown.set_id, chosen, rejected)

    def score(self, shown: Shown, candidate: int, value: float) -> int:
        """A real-valued rating of one candidate."""
        return self.store.score(self.user, shown.set_id, candidate, value)

    def learn(self) -> LearnReport:
        """Learns the feedback recorded since the last update, saves a new version
        and hot-swaps to it."""
        report = self.learner.learn(self.user, self.name, self._identity)
        if report.updated and report.version is not None:
            self._swap(report.version)
        return report

    def rollback(self) -> int:
        """Returns to the previous saved version, in the registry and in the runtime."""
        info = self.registry.rollback(self.user, self.name)
        self._swap(info.version)
        return info.version

    def _swap(self, version: int) -> None:
        fresh = self.registry.open(self.user, self.name, version)
        if self._ranker is None or self._ranker_is_global:
            self._ranker = fresh
            self._ranker_is_global = False
        else:
            self._ranker.swap(fresh.session, version)

    def close(self) -> None:
        self.store.close()
