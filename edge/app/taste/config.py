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
    mid-sentence), and the same mean-vector head with every prior variance x10,
    that is a tenth of the pull ``l2``. The balanced head sits between the first
    two, which a mix of them can approach: as a further head it added a fit's
    cost for -4 / +1 points of mean top-1 at 50 / 200 events on the study's pool
    (docs/taste-learner.md).

    The signals head keeps the lexicon out (x0.01): with its 211 columns beside
    the signals' few, a length taste learned slower (verbose 59 -> 40 % top-1 at
    50 events); kept out, the study's users gain 2.6 points at 50 events and the
    content users, whom the mean-vector head's lexicon still serves, lose 2.6
    (docs/results/content-tastes.md).

    The weakly pulled head is for clean feedback. ``l2`` is 10 because most
    reactions to a content taste are coin flips (content users 54 -> 61 % top-1
    at 200 events with two heads), but dense, clean feedback (a user marking all
    K answers right or wrong) then underfits: the demo's correctness task fell
    from 47 to 41 % (4 seeds). With this head the mix picks the pull by
    evidence: correctness 45 %, content users 60 % at 200 events
    (docs/results/content-tastes.md, third round)."""
    mean_head = {"last": 0.01}
    weak: dict[str, float] = {part: 10.0 * mean_head.get(part, 1.0) for part in PARTS}
    return ({"signals": 100.0, "lexicon": 0.01}, mean_head, weak)


@dataclass(frozen=True)
class TasteConfig:
    """How the torch-free learner fits each user's taste head (``PersonalRanker``'s default)."""

    # Pull towards the global ranker (v = 0), in standardised units. 10, not 1: feedback
    # is noisy (a reaction to answers that tie on the user's taste is a coin flip), and
    # the stronger pull fits less of that noise (docs/results/content-tastes.md, third
    # round); the default heads include one at a tenth of it, for clean feedback.
    l2: float = 10.0
    # Pull of u (the user's weight on the global ranker) towards 0: a user whose taste
    # opposes the population's turns the global down within a few events. At 1 the
    # pull is worth about two pairs (docs/taste-learner.md).
    global_l2: float = 1.0
    implicit_weight: float = 1.0  # total weight of a lone thumb vs its set's unrated answers
    use_mean: bool = True  # read the mean vectors when the events carry them
    use_signals: bool = True  # read the on-device signals part
    use_lexicon: bool = True  # read the on-device lexicon part (sets with texts)
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
    # Default: signals x100 with the lexicon x0.01; the last-token vector x0.01; and
    # that head again at a tenth of the pull (see _default_heads).
    # Each head adds about one fit's cost: ({},) is the single balanced head.
    head_priors: tuple[dict[str, float], ...] = field(default_factory=_default_heads)
    mix_rate: float = 1.0  # Hedge rate on the heads' prequential pair log-loss (inf: best only)
    # Each new set multiplies the evidence so far by this (half-life ~34 sets at
    # 0.98): the heads learn at different speeds, so old evidence describes the
    # heads as they were, not as they are (1: never forget).
    evidence_decay: float = 0.98
    # A block wider than this (the hidden-state parts of a 4096-d model, not of a
    # 576-d one) is fitted in a basis of a few hundred directions: the one shipped
    # with the global ranker, else a seeded random one (edge.app.taste.basis). The
    # user's rows and each update's reading shrink by width / rank; the head stays
    # a linear head over the raw inputs. None: every part at full width.
    reduce_above: int | None = 1024
    basis_rank: int = 256  # directions per reduced part when the global ranker ships none
    basis_seed: int = 0  # seed of that random basis (the same for every user)
    # Names of blocks beyond the parts registry that head_priors and standardise_each
    # may name: the candidate blocks of an offline study (TasteFit takes any block
    # layout). The shipped learner fits registry parts only.
    extra_blocks: tuple[str, ...] = ()
    # Groups whose prior adapts coordinate by coordinate (a reweighted L2 towards an L1
    # prior, TasteFit._adapt_priors), and the floor of each coordinate's share. The
    # lexicon: a content taste is a few of its 211 categories, and the adaptive prior
    # finds them (content users 38 -> 52 % top-1 at 50 events, docs/results/content/).
    sparse_groups: tuple[str, ...] = ("lexicon",)
    sparse_floor: float = 0.5

    def __post_init__(self) -> None:
        if self.l2 <= 0 or self.global_l2 <= 0:
            raise ConfigError(f"l2 and global_l2 must be positive, got {self.l2}, {self.global_l2}")
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
        if set(self.sparse_groups) - set(groups) or "global" in self.sparse_groups:
            parts = [g for g in groups if g != "global"]
            raise ConfigError(f"sparse_groups names parts of {parts}")
        if not self.sparse_floor > 0:
            raise ConfigError(f"sparse_floor must be positive, got {self.sparse_floor}")
        for prior in self.head_priors:
            if set(prior) - set(groups) or not all(f > 0 for f in prior.values()):
                raise ConfigError(f"a head prior maps {groups} to factors > 0, got {prior}")
        if not self.mix_rate > 0:
            raise ConfigError(f"mix_rate must be positive, got {self.mix_rate}")
        if not 0 < self.evidence_decay <= 1:
            raise ConfigError(f"evidence_decay must be in (0, 1], got {self.evidence_decay}")
        if self.reduce_above is not None and self.reduce_above < 1:
            raise ConfigError(f"reduce_above must be at least 1 or None, got {self.reduce_above}")
        if self.basis_rank < 1:
            raise ConfigError(f"basis_rank must be at least 1, got {self.basis_rank}")

    def build(self, store: FeedbackStore, registry: Registry) -> TasteLearner:
        """The taste learner with these settings (what ``PersonalRanker`` calls)."""
        from edge.app.taste.learner import TasteLearner

        return TasteLearner(store, registry, self)
