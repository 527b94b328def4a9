"""The learner seam: what every per-user learner does, and the one report it returns.

A learner keeps users' rankers up to date from a feedback store into a
registry: ``learn(user, name)`` reads the feedback recorded since that user's
last saved version, fits, saves a new version and says what it did. Two
learners implement it:

- the torch-free taste learner (``edge.app.taste.TasteLearner``, built by
  ``TasteConfig``): a small linear head per user over the global ranker,
  fitted with numpy in milliseconds; the default;
- the torch learner (``edge.training.Learner``, built by ``LearnerConfig``):
  a whole list or point ranker trained per user, when ``torch`` is installed.

``PersonalRanker(learner=...)`` takes either config (``LearnerSpec``: anything
that ``build``s a ``UserLearner``), builds the learner once, and from then on
calls ``learn`` through this seam alone, so the app's code never names torch.

What every learner honours: the registry's lock for the ranker across
read-fit-save (``Registry.locked``) with a compare-and-swap save, so two
processes never learn one event twice nor move the cursor back; and the events
a rollback forgot (``Registry.forgotten``, dropped by ``edge.app.lineage.learnable``),
which no later version learns again, and which each saved version records under
``FORGOTTEN_KEY`` beside its ``CURSOR_KEY`` (``edge.app.lineage``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from edge.app.registry import Registry, VersionInfo
    from edge.app.store import FeedbackStore
    from edge.runtime.types import FeatureIdentity

__all__ = [
    "IDENTITY_KEY",
    "FitReport",
    "LearnReport",
    "LearnerSpec",
    "StartedFrom",
    "UserLearner",
]

# Where a user's weights came from: their own saved version, a base checkpoint
# (the torch learner), the global ranker of the same name, or nothing.
StartedFrom = Literal["user", "base", "global", "scratch"]
IDENTITY_KEY = "features"  # version metadata: the features' model, checksum and layer


@dataclass(frozen=True)
class FitReport:
    """What one fit of the optimiser did, for a learner that reports it (the taste learner)."""

    passes: int  # outer iterations run
    loss: float  # objective per unit of pair weight after the fit (penalty included)
    gradient: float  # |standardised gradient| / total pair weight when it stopped
    seconds: float  # wall-clock time of the fit
    refreshed: float = 1.0  # share of the rows whose gradient an iteration recomputed, mean
    cpu_seconds: float = 0.0  # CPU time of the fit (this process; on a busy machine < seconds)
    mix: tuple[float, ...] = (1.0,)  # each head's share of the ranking head after the fit


@dataclass(frozen=True)
class LearnReport:
    """What one ``learn`` call did, whichever learner ran it."""

    user: str  # whose ranker
    name: str  # which ranker
    updated: bool  # False when there was not enough new feedback
    version: int | None  # the version saved and now current; None when not updated
    saved: VersionInfo | None  # that version's registry record (checksums, metadata)
    new_events: int  # events after the saved cursor, learned by this update
    replayed_events: int  # older events the update also fitted (replay, or the history)
    examples: int  # training examples: preference pairs (taste), groups + pairs (torch)
    started_from: StartedFrom | None  # where the weights came from
    loss_before: float  # loss on the new events' sets before the update
    loss_after: float  # the same after
    cursor: int  # event id up to which feedback is now learned
    seconds: float  # wall-clock time of the whole update (read, fit, export, save)
    fit: FitReport | None = None  # the optimiser's own report, where the learner has one
    warm_version: int | None = None  # version whose weights the update continued from
    global_version: int | None = None  # global ranker under the user's head, None without one

    @classmethod
    def skipped(
        cls, user: str, name: str, cursor: int, seconds: float, new_events: int = 0
    ) -> LearnReport:
        """The report of an update that found too little new feedback to run."""
        nan = float("nan")
        return cls(user, name, False, None, None, new_events, 0, 0, None, nan, nan, cursor, seconds)


class UserLearner(Protocol):
    """Updates users' rankers from a feedback store into a registry."""

    def learn(self, user: str, name: str, identity: FeatureIdentity | None = None) -> LearnReport:
        """Learn ``user``'s feedback for ranker ``name`` recorded since their last
        saved version, save a new version, and report. ``identity`` names the
        features the feedback's sets carry (None: what the current version
        recorded), and is recorded in the saved ranker."""
        ...


class LearnerSpec(Protocol):
    """A learner's config: what ``PersonalRanker(learner=...)`` takes."""

    def build(self, store: FeedbackStore, registry: Registry) -> UserLearner:
        """The learner this config describes, over ``store`` and ``registry``."""
        ...
