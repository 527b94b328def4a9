"""The few-call API an app uses: generate, rank, show, record feedback, learn.

One `PersonalRanker` is one user's ranker of one name ("chat", "math", ...)
over one central model. Feedback goes to a SQLite store and rankers to a
versioned registry, both under `home`; several users and several ranker names
can share the same home.

    with CentralClient("127.0.0.1:50051") as central, PersonalRanker(
        central, home="~/.ranker", user="alice", name="math"
    ) as me:
        shown = me.generate("Which number is larger, 47 or 74?", k=8)
        print(shown.best.text)             # the ranker's pick (the greedy answer until trained)
        me.thumbs(shown, shown.best.index, up=False)
        me.learn()                         # fit, compose the ONNX ranker, hot-swap

An asyncio app uses `edge.app.async_personal.AsyncPersonalRanker`, the same
calls awaited; both front ends share `edge.app.personal_base.PersonalBase`.

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

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edge.app.learning import LearnReport
from edge.app.personal_base import GENERATE_DEFAULTS, PersonalBase, Shown
from edge.app.personal_base import REGISTRY_DIR as REGISTRY_DIR  # where they were
from edge.app.personal_base import STORE_FILE as STORE_FILE
from edge.runtime.types import Generation

if TYPE_CHECKING:
    from edge.runtime.client import CentralClient, Prompt  # noqa: F401 (CentralClient: below)

__all__ = ["PersonalRanker", "Shown"]


class PersonalRanker(PersonalBase["CentralClient"]):  # a string: no grpc at import
    """One user's ranker: ranks with onnxruntime, learns from that user's feedback only."""

    def __enter__(self) -> PersonalRanker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def generate(self, prompt: Prompt, k: int = 8, **options: Any) -> Shown:
        """Samples K candidates from central, ranks them, and records them as shown.

        Unless ``options`` say otherwise, central is asked for both vectors, the
        mean entropy and the greedy answer as candidate 0 (``GENERATE_DEFAULTS``);
        an older server sends what it has and the head does without the rest.
        """
        generation = self.central.generate(prompt, k, **{**GENERATE_DEFAULTS, **options})
        return self.show(generation)

    def show(self, generation: Generation) -> Shown:
        """Ranks a generation the app already has and records it as shown (its
        on-device parts, the signals and the lexicon, computed once, for both)."""
        return self._show(generation)

    def thumbs(self, shown: Shown, candidate: int, *, up: bool) -> int:
        """Thumbs up or down on one shown candidate; returns the event id."""
        return self._thumbs(shown, candidate, up)

    def pick(self, shown: Shown, chosen: int, rejected: Sequence[int] | None = None) -> int:
        """The user preferred `chosen` over `rejected` (default: all other candidates)."""
        return self._pick(shown, chosen, rejected)

    def score(self, shown: Shown, candidate: int, value: float) -> int:
        """A real-valued rating of one candidate."""
        return self._score(shown, candidate, value)

    def learn(self) -> LearnReport:
        """Learns the feedback recorded since the last update, saves a new version
        and hot-swaps to it."""
        return self._learn()

    def rollback(self, to: int | None = None) -> int:
        """Returns to an earlier saved version (default: the previous one), in the
        registry and in the runtime; the feedback only the versions left had learned
        is not learned again (``edge.app.lineage``). Returns the version now current."""
        return self._rollback(to)

    def close(self) -> None:
        """Closes the feedback store (central is the caller's to close)."""
        self._close()
