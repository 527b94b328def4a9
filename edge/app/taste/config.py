"""How the taste learner fits each user's heads: one frozen config, checked when built."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edge._errors import ConfigError
from edge.runtime.parts import PARTS

if TYPE_CHECKING:
    from edge.app.registry import Registry
    from edge.app.store import FeedbackStore
    from edge.app.taste.learner import TasteLearner

__all__ = ["GROUPS", "TasteConfig"]

# Groups of columns a head's prior can weigh: the parts and u's column ("global").
GROUPS: tuple[str, ...] = (*PARTS, "global")


def _default_heads() -> tuple[dict[str, float], ...]:
    """One head trusting the signals (a taste that a statistic of the text shows),
    one trusting the mean vector over the last token's (a taste of the whole
    answer, where the last token of an answer cut at its length limit is
    mid-sentence). The balanced head sits between the two, which a mix of them
    can approach: as a third head it added a fit's cost for -4 / +1 points of
    mean top-1 at 50 / 200 events on the study's pool (docs/taste-learner.md)."""
    return ({"signals": 100.0}, {"last": 0.01})


@dataclass(frozen=True)
class TasteConfig:
    """How the torch-free learner fits each user's taste head (``PersonalRanker``'s default)."""

    l2: float = 1.0  # pull towards the global ranker (v = 0), in standardised units
    implicit_weight: float = 1.0  # total weight of a lone thumb vs its set's unrated answers
    use_mean: bool = True  # read the mean vectors when the events carry them
    use_signals: bool = True  # read the on-device signals part
    variance_prior: float = 8.0  # pseudo-count shrinking each variance to its group's mean
    # Groups standardised coordinate by coordinate: the signals, whose units differ
    # (a log count, a fraction). A hidden-state part is standardised as a whole:
    # its coordinates share units, and dividing each by its own spread would
    # amplify the many near-constant ones to the weight of the few that vary.
    standardise_each: tuple[str, ...] = ("signals", "global")
    memory: int = 8  # past steps kept as extra directions of the subspace solve
    passes: int = 1  # outer iterations per new event
    cold_passes: int = 40  # outer iterations at most per update, and from a cold start
    refresh: float = 0.25  # share of sets whose gradient a warm iteration recomputes
    refresh_block: int = 4  # consecutive sets refreshed together (one matrix product)
    tolerance: float = 1e-3  # stop when |standardised gradient| <= this x total pair weight
    history: int = 1000  # newest events a learner reads when it (re)builds a user's rows
    global_weight: bool = True  # fit u in (1 + u) * global score (False: u stays 0)
    min_new_events: int = 1  # skip an update until this many events are new
    # One head per entry, each with its own prior: a group's prior variance is
    # multiplied by the factor given (absent: 1, every part equally trusted).
    # Default: signals x100, and last-token vector x0.01 (see _default_heads).
    # Each head adds about one fit's cost: ({},) is the single balanced head.
    head_priors: tuple[dict[str, float], ...] = field(default_factory=_default_heads)
    mix_rate: float = 1.0  # Hedge rate on the heads' prequential pair log-loss (inf: best only)
    # Each new set multiplies the evidence so far by this (half-life ~34 sets at
    # 0.98): the heads learn at different speeds, so old evidence describes the
    # heads as they were, not as they are (1: never forget).
    evidence_decay: float = 0.98
    # Names of blocks beyond the parts registry that head_priors and standardise_each
    # may name: the candidate blocks of an offline study (TasteFit takes any block
    # layout). The shipped learner fits registry parts only.
    extra_blocks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.l2 <= 0:
            raise ConfigError(f"l2 must be positive, got {self.l2}")
        if self.memory < 0 or self.passes < 1 or self.cold_passes < 1 or self.history < 1:
            raise ConfigError("memory >= 0, passes >= 1, cold_passes >= 1, history >= 1")
        if not 0 < self.refresh <= 1:
            raise ConfigError(f"refresh must be in (0, 1], got {self.refresh}")
        if self.refresh_block < 1:
            raise ConfigError(f"refresh_block must be at least 1, got {self.refresh_block}")
        if not self.head_priors:
            raise ConfigError("head_priors needs at least one head")
        groups = (*GROUPS, *self.extra_blocks)
        if set(self.standardise_each) - set(groups):
            raise ConfigError(f"standardise_each names groups of {groups}")
        for prior in self.head_priors:
            if set(prior) - set(groups) or not all(f > 0 for f in prior.values()):
                raise ConfigError(f"a head prior maps {groups} to factors > 0, got {prior}")
        if not self.mix_rate > 0:
            raise ConfigError(f"mix_rate must be positive, got {self.mix_rate}")
        if not 0 < self.evidence_decay <= 1:
            raise ConfigError(f"evidence_decay must be in (0, 1], got {self.evidence_decay}")

    def build(self, store: FeedbackStore, registry: Registry) -> TasteLearner:
        """The taste learner with these settings (what ``PersonalRanker`` calls)."""
        from edge.app.taste.learner import TasteLearner

        return TasteLearner(store, registry, self)
