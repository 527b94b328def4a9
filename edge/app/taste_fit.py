"""Fitting a user's taste head from their feedback: pairwise logistic, numpy only.

The model (see ``edge.app.taste``) scores candidate k as ``(1 + u) g_k + x_k . v``:
the global ranker's score ``g_k``, weighted by ``1 + u``, plus a linear term over
the candidate's blocks (last-token vector, mean vector, signals) stacked into one
row ``x_k``. Every kind of feedback becomes *preferences within one shown set*,
pairs "winner over loser" with a weight:

- a pick: the chosen candidate over each rejected one (weight 1 each);
- scores: every higher-scored candidate over every lower-scored one (1 each);
- thumbs: each thumbed-up candidate over each thumbed-down one (1 each); a thumb
  with no opposite thumb in its set is compared with the set's unrated
  candidates instead, at ``implicit_weight`` in total (an up beats the typical
  unrated answer, a down loses to it).

Only differences within a set matter, so the global score enters as an offset
(the head learns what the global ranker misses) and no intercept or centring is
needed. The loss is Bradley-Terry's, with an L2 pull towards 0:

    f(v) = sum_pairs w * log(1 + exp(-(g_i + x_i.v - g_j - x_j.v))) + l2/2 * |v / s|^2

where ``s`` standardises by the spread *within* sets and divides a block by the
square root of its width, so each block carries the same total weight: 21
signals are not drowned by 576 or 4096 hidden dimensions. The signals are
standardised coordinate by coordinate (their units differ; each variance is
shrunk towards the block's average by ``variance_prior`` pseudo-counts), a
hidden-state block as a whole (its coordinates share units, and dividing each by
its own spread would give the many near-constant ones the weight of the few that
vary: on the study's pool that cost 3 to 5 points of top-1 without signals).
``v = 0`` (and ``u = 0``) is the global ranker, where a new user starts.

*Several heads, one mix.* How much each block should be trusted is a property
of the user's taste (a length or list taste lives in two signals, a topic in the
vectors), and with a few hundred pairs the prior decides most of the fit. So
the fit keeps one head per ``head_priors`` entry over the same rows, each the
optimum of ``f`` with its block's prior variance multiplied by a factor
(default: one trusting the signals 100x more than the balanced head above, one
trusting the mean vector over the last token's), and ranks with their Hedge
mix (``TasteFit.mix``): each new set's preferences are scored by every head
*before* any head learns from them (progressive validation), the summed pair
log-loss is each head's evidence, and the shares
are ``exp(-mix_rate * evidence)`` normalised (at rate 1 and without decay, a
Bayesian posterior over the heads read as predictive models). The evidence
decays (``evidence_decay``, half-life ~34 sets) because the heads learn at
different speeds: the head that predicted best over the first events is not
always the one that predicts best now (on the study's pool, decay raised mean
top-1 at 200 events by ~2 points). A convex mix of linear heads over
the same inputs is itself a linear head, so the ONNX graph and the files are
unchanged. The heads step in lockstep over the same rows, one matrix-vector
product per head (with this OpenBLAS that is faster than one product with a
column per head: see ``_rows_times``), so each head adds about one read of the
rows to an update.

When the sets carry a global ranker's scores, the row ends with one more column,
``g_k`` itself, whose weight is ``u`` (so ``g_i + x_i.v`` above reads
``(1 + u) g_i + x_i.v``): a user whose taste opposes the global ranker's turns
it down (``u`` towards -1, or below: reversed) within a few events, instead of
unlearning it direction by direction in the wide blocks. It is a block of width
1, standardised and pulled to 0 with the same ``l2`` as the others, so a new
user starts exactly at the global ranker. In standardised units the pull is
``l2/2 * (u * sd(g))^2``: worth about two pairs at ``l2 = 1`` (a pair's
information on ``u`` is ``p(1-p) * 2 var(g)`` on average, ``var(g)/2`` at
p = 1/2), so one pick among 8 (7 pairs) outweighs it. Without a global ranker
there is no such column and nothing changes.

The fit is built for one update per event at a few hundred events of history:
the rows stay in memory (float32, as deviations from their set's mean, which
changes no margin and keeps the passes exact where every answer shares a large
offset, as hidden states do), ``s`` is recomputed from running sums, and the
optimiser is sequential subspace optimisation (SESOP, Narkiss and Zibulevsky
2005): each outer iteration takes a gradient, reads the rows times the new
direction, and solves the problem exactly, by Newton's method, inside the span
of that direction and the last ``memory`` steps, which costs pairs x directions,
not pairs x dimensions. Warm-started from the previous optimum and its memory,
one iteration per new event keeps the objective within 0.1% of a full refit
for the balanced head and the mean-vector one (``tests/edge/app/test_taste_fit.py``).
The signals-heavy head lags further (about 6% on that test's data): its steps,
scaled by its prior,
move the 21 signals first and the wide blocks slowly, which works like early
stopping. A step preconditioned by the curvature tracked its optimum to 0.2%
and ranked worse on the study's pool (about 3 points at 50 events), so the
lag is kept, and measured rather than hidden.

Reading the history is the whole cost at wide features (at 4096-d, 200 events
of last + mean rows are 53 MB), so it is read as little as possible. A set's
deviations sum to zero, so its first row is minus the sum of the others and
only K-1 rows are kept. A warm iteration reads them about 1.25 times, not
twice: the gradient is kept as rows^T times each row's last computed loss
derivative, and only the ``refresh`` share of sets whose derivatives moved most
(a new set first) is recomputed, as in SAGA (Defazio, Bach and Lacoste-Julien
2014); the rest of the read is the product with the new direction, which no
bookkeeping can avoid. A cold fit, and any decision to stop, uses the exact
gradient.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from edge._errors import FeatureError, TrainingError
from edge.app.taste import BLOCKS, Block, TasteHead
from edge.runtime.signals import SIGNAL_NAMES

__all__ = [
    "FitReport",
    "Pairs",
    "Reaction",
    "TasteConfig",
    "TasteFit",
    "preference_pairs",
]


# Groups of columns a head's prior can weigh: the blocks and u's column.
_GROUPS: tuple[str, ...] = (*BLOCKS, "global")


def _default_heads() -> tuple[dict[str, float], ...]:
    """One head trusting the signals (a taste that a statistic of the text shows),
    one trusting the mean vector over the last token's (a taste of the whole
    answer, where the last token of an answer cut at its length limit is
    mid-sentence). The balanced head sits between the two, which a mix of them
    can approach: as a third head it added a fit's cost for -4 / +1 points of
    mean top-1 at 50 / 200 events on the study's pool."""
    return ({"signals": 100.0}, {"last": 0.01})


@dataclass
class TasteConfig:
    """How the torch-free learner fits each user's taste head."""

    l2: float = 1.0  # pull towards the global ranker (v = 0), in standardised units
    implicit_weight: float = 1.0  # total weight of a lone thumb vs its set's unrated answers
    use_mean: bool = True  # read the mean vectors when the events carry them
    use_signals: bool = True  # read the on-device signals block
    variance_prior: float = 8.0  # pseudo-count shrinking each variance to its block's mean
    # Groups standardised coordinate by coordinate: the signals, whose units differ
    # (a log count, a fraction). A hidden-state block is standardised as a whole:
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
    # multiplied by the factor given (absent: 1, every block equally trusted).
    # Default: signals x100, and last-token vector x0.01 (see _default_heads).
    # Each head adds about one fit's cost: ({},) is the single head of before.
    head_priors: tuple[dict[str, float], ...] = field(default_factory=_default_heads)
    mix_rate: float = 1.0  # Hedge rate on the heads' prequential pair log-loss (inf: best only)
    # Each new set multiplies the evidence so far by this (half-life ~34 sets at
    # 0.98): the heads learn at different speeds, so old evidence describes the
    # heads as they were, not as they are (1: never forget).
    evidence_decay: float = 0.98

    def __post_init__(self) -> None:
        if self.l2 <= 0:
            raise TrainingError(f"l2 must be positive, got {self.l2}")
        if self.memory < 0 or self.passes < 1 or self.cold_passes < 1 or self.history < 1:
            raise TrainingError("memory >= 0, passes >= 1, cold_passes >= 1, history >= 1")
        if not 0 < self.refresh <= 1:
            raise TrainingError(f"refresh must be in (0, 1], got {self.refresh}")
        if not self.head_priors:
            raise TrainingError("head_priors needs at least one head")
        if set(self.standardise_each) - set(_GROUPS):
            raise TrainingError(f"standardise_each names groups of {_GROUPS}")
        for prior in self.head_priors:
            if set(prior) - set(_GROUPS) or not all(f > 0 for f in prior.values()):
                raise TrainingError(f"a head prior maps {_GROUPS} to factors > 0, got {prior}")
        if not self.mix_rate > 0:
            raise TrainingError(f"mix_rate must be positive, got {self.mix_rate}")
        if not 0 < self.evidence_decay <= 1:
            raise TrainingError(f"evidence_decay must be in (0, 1], got {self.evidence_decay}")


class Reaction(NamedTuple):
    """One feedback event on a set, without the set's features."""

    kind: str  # "thumb", "pick" or "score"
    candidate: int  # thumbed, chosen or scored candidate
    value: float | None  # thumb: 1.0 up / 0.0 down; score: the value; pick: None
    rejected: tuple[int, ...] = ()  # pick: the candidates passed over


class Pairs(NamedTuple):
    """Preferences as parallel arrays: ``winners[i]`` over ``losers[i]`` with ``weights[i]``."""

    winners: np.ndarray  # (N,) int64 candidate (or row) indices
    losers: np.ndarray  # (N,) int64
    weights: np.ndarray  # (N,) float64, > 0

    @classmethod
    def empty(cls) -> Pairs:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))

    @classmethod
    def concat(cls, parts: Iterable[Pairs]) -> Pairs:
        parts = list(parts)
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls._fields))

    def shifted(self, offset: int) -> Pairs:
        return Pairs(self.winners + offset, self.losers + offset, self.weights)


def preference_pairs(reactions: Sequence[Reaction], k: int, implicit_weight: float) -> Pairs:
    """The preferences a set's reactions state, over candidate indices 0..k-1.

    For thumbs and scores the latest reaction to a candidate wins, as in
    ``events_to_dataset``; every pick counts.
    """
    thumbs = {r.candidate: float(r.value or 0.0) for r in reactions if r.kind == "thumb"}
    scores = {r.candidate: float(r.value or 0.0) for r in reactions if r.kind == "score"}
    out: list[tuple[int, int, float]] = []
    for r in reactions:
        if r.kind == "pick":
            out += [(r.candidate, j, 1.0) for j in r.rejected]
    out += [(i, j, 1.0) for i, a in scores.items() for j, b in scores.items() if a > b]
    ups = [i for i, up in thumbs.items() if up > 0.5]
    downs = [i for i, up in thumbs.items() if up <= 0.5]
    out += [(i, j, 1.0) for i in ups for j in downs]
    unrated = [j for j in range(k) if j not in thumbs and j not in scores]
    if unrated and implicit_weight > 0:
        w = implicit_weight / len(unrated)
        if not downs:
            out += [(i, j, w) for i in ups for j in unrated]
        if not ups:
            out += [(j, i, w) for i in downs for j in unrated]
    if not out:
        return Pairs.empty()
    winners, losers, weights = zip(*out, strict=True)
    return Pairs(np.array(winners, np.int64), np.array(losers, np.int64), np.array(weights))


@dataclass(frozen=True)
class FitReport:
    """What one ``TasteFit.fit`` call did."""

    passes: int  # outer iterations run
    loss: float  # objective per unit of pair weight after the fit (penalty included)
    gradient: float  # |standardised gradient| / total pair weight when it stopped
    seconds: float  # wall-clock time of the fit
    refreshed: float = 1.0  # share of the rows whose gradient an iteration recomputed, mean
    cpu_seconds: float = 0.0  # CPU time of the fit (this process; on a busy machine < seconds)
    mix: tuple[float, ...] = (1.0,)  # each head's share of the ranking head after the fit


@dataclass
class _Set:
    start: int  # first row of the set's candidates
    k: int  # number of candidates
    pairs: Pairs = field(default_factory=Pairs.empty)  # in row indices


@dataclass
class _Head:
    """One head's weights and optimiser state over the fit's shared rows."""

    root_prior: np.ndarray  # (D,) sqrt of each coordinate's prior-variance factor
    v: np.ndarray  # (D,) weights in raw feature space (u last, when fitted)
    h: np.ndarray  # (row capacity,) rows @ v, up to a constant per set
    dirs: np.ndarray  # (memory, D) remembered steps, overwritten oldest first
    dir_rows: np.ndarray  # (row capacity, memory) the rows times each remembered step
    r_ref: np.ndarray  # (row capacity,) each row's loss derivative as last computed
    g_ref: np.ndarray  # (D,) rows^T @ r_ref: the data term's gradient as kept
    filled: int = 0  # remembered steps in use
    next: int = 0  # memory slot the next step overwrites
    evidence: float = 0.0  # prequential loss: each new set's pair log-loss before learning it


@dataclass
class _Run:
    """One head's progress through a ``fit`` call."""

    head: _Head  # the head being fitted
    scale: np.ndarray  # its raw -> standardised factor per coordinate (prior included)
    passes: int = 0  # iterations run
    refreshed: float = 0.0  # share of rows whose gradient was recomputed, summed over passes
    gradient: float = 0.0  # |standardised gradient| when it stopped
    objective: float | None = None  # objective after its last step (None: not computed)


class TasteFit:
    """One user's rows, preferences and heads, updated in place per event.

    ``has_global``: the sets come with a global ranker's scores, so (with
    ``config.global_weight``) the rows end with the global score's column and
    ``v``'s last coordinate is ``u``.

    The fit keeps one head per ``config.head_priors`` entry over the same rows
    (they differ only in how much each block is trusted a priori) and ranks
    with their Hedge mix: see ``mix``.
    """

    def __init__(
        self,
        feature_size: int,
        blocks: Sequence[Block],
        config: TasteConfig,
        has_global: bool = False,
    ) -> None:
        sizes = {"last": feature_size, "mean": feature_size, "signals": len(SIGNAL_NAMES)}
        self.blocks: tuple[Block, ...] = tuple(b for b in BLOCKS if b in blocks)
        if "last" not in self.blocks:
            raise TrainingError("a taste head needs the 'last' block")
        self.feature_size = feature_size
        self.config = config
        self._spans: dict[Block, tuple[int, int]] = {}
        width = 0
        for b in self.blocks:
            self._spans[b] = (width, width + sizes[b])
            width += sizes[b]
        # Column groups standardised together: the blocks, and the global score's
        # column when u is fitted (its index is ``_global_col``).
        self._groups: dict[str, tuple[int, int]] = {b: span for b, span in self._spans.items()}
        self._global_col: int | None = None
        if has_global and config.global_weight:
            self._global_col = width
            self._groups["global"] = (width, width + 1)
            width += 1
        self.width = width  # D: length of a row and of v (u last, when fitted)
        # Rows: each candidate's deviations from its set's mean. They sum to 0 over
        # a set, so a set's first row is minus the sum of its others and only the
        # K-1 others are kept ("stored rows", ``_x``): 1/8 less to read per pass
        # at K=8. Everything per candidate (``_g``, a head's ``h``, ...) has all K rows.
        self._x = np.zeros((0, width), np.float32)  # stored rows, capacity grows by doubling
        self._stored = 0  # stored rows in use
        self._row_of = np.zeros(0, np.int64)  # the row each stored row is
        self._first_of = np.zeros(0, np.int64)  # the first row of its set
        self._set_of = np.zeros(0, np.int64)  # the number of its set
        self._firsts: list[int] = []  # first row of each set, in set order
        self._rows = 0
        self._g = np.zeros(0)  # global score per row
        self._sets: dict[str, _Set] = {}
        self._pairs: Pairs | None = Pairs.empty()  # all sets' pairs; None when stale
        self._ss = np.zeros(width)  # within-set sums of squared deviations per coordinate
        self._count = dict.fromkeys(self._groups, 0)  # deviations summed per group
        self._scale_cache: np.ndarray | None = None  # _scale() until the statistics change
        self._group_width = np.ones(width)  # the width of each coordinate's group
        for lo, hi in self._groups.values():
            self._group_width[lo:hi] = hi - lo
        self._heads = [self._new_head(root) for root in self._root_priors()]
        # (row, stored row) where every refresh_block-th set starts
        self._block_starts: list[tuple[int, int]] = []

    def _root_priors(self) -> list[np.ndarray]:
        """sqrt of each head's prior factor per coordinate. A head is dropped when it
        equals an earlier one on this fit's groups (two heads that differ only on a
        block this fit lacks), or when it scales every block of the fit alike: another
        ``l2``, not another weighting of the blocks (e.g. last x0.01 where 'last' is
        the only block). The first head is always kept: without signals the
        signals-heavy head is the balanced one."""
        roots: list[np.ndarray] = []
        for prior in self.config.head_priors:
            factors = {prior.get(b, 1.0) for b in self.blocks}
            if roots and len(factors) == 1 and factors != {1.0}:
                continue
            root = np.ones(self.width)
            for group, (lo, hi) in self._groups.items():
                root[lo:hi] = np.sqrt(prior.get(group, 1.0))
            if not any(np.array_equal(root, r) for r in roots):
                roots.append(root)
        return roots

    def _new_head(self, root_prior: np.ndarray) -> _Head:
        memory, width = self.config.memory, self.width
        return _Head(
            root_prior,
            v=np.zeros(width),
            h=np.zeros(len(self._g)),
            dirs=np.zeros((memory, width)),
            dir_rows=np.zeros((len(self._g), memory)),
            r_ref=np.zeros(len(self._g)),
            g_ref=np.zeros(width),
        )

    # -- data ------------------------------------------------------------------------
    @property
    def num_rows(self) -> int:
        return self._rows

    @property
    def num_sets(self) -> int:
        return len(self._sets)

    @property
    def num_heads(self) -> int:
        return len(self._heads)

    def has_set(self, set_id: str) -> bool:
        return set_id in self._sets

    def _grow(self, k: int) -> None:
        """Room for one more set of ``k`` rows (``k - 1`` stored)."""
        if self._rows + k > len(self._g):
            capacity = max(self._rows + k, 2 * len(self._g), 64)
            self._g = _resized(self._g, capacity, self._rows)
            for head in self._heads:
                for name in ("h", "dir_rows", "r_ref"):
                    setattr(head, name, _resized(getattr(head, name), capacity, self._rows))
        if self._stored + k - 1 > len(self._x):
            capacity = max(self._stored + k - 1, 2 * len(self._x), 64)
            for name in ("_x", "_row_of", "_first_of", "_set_of"):
                setattr(self, name, _resized(getattr(self, name), capacity, self._stored))

    def _times(self, u: np.ndarray) -> np.ndarray:
        """Every row times ``u`` (a vector, or a matrix with a column per head): one
        read of the stored rows per column."""
        m = self._stored
        stored = _rows_times(self._x[:m], u.astype(np.float32)).astype(np.float64)
        out = np.empty((self._rows, *u.shape[1:]))
        out[self._row_of[:m]] = stored
        columns = stored.reshape(m, int(np.prod(u.shape[1:], dtype=int))).T
        sums = [
            np.bincount(self._set_of[:m], weights=c, minlength=len(self._firsts)) for c in columns
        ]
        out[self._firsts] = -np.stack(sums, axis=1).reshape(len(self._firsts), *u.shape[1:])
        return out

    def _stored_weights(self, r: np.ndarray) -> np.ndarray:
        """c with stored_rows^T @ c == rows^T @ r: each row's r minus its set's first's."""
        m = self._stored
        return r[self._row_of[:m]] - r[self._first_of[:m]]

    def _full_rows(self) -> np.ndarray:
        """(rows, width) float32: every row, the first of each set included (tests)."""
        m = self._stored
        out = np.zeros((self._rows, self.width), np.float32)
        out[self._row_of[:m]] = self._x[:m]
        np.subtract.at(out, self._first_of[:m], self._x[:m])
        return out

    def add_set(
        self,
        set_id: str,
        candidates: np.ndarray,
        mean_candidates: np.ndarray | None = None,
        signals: np.ndarray | None = None,
        global_scores: np.ndarray | None = None,
    ) -> None:
        """Append a shown set's K rows (blocks the set lacks stay 0: no information).

        ``global_scores`` are the global ranker's scores of the set (None: 0), the
        offset and, when u is fitted, the last column."""
        if set_id in self._sets:
            raise TrainingError(f"set {set_id!r} is already in the fit")
        cand = np.asarray(candidates, np.float32)
        k = cand.shape[0]
        if cand.ndim != 2 or cand.shape[1] != self.feature_size:
            raise FeatureError(
                f"set {set_id!r}: candidates have shape {cand.shape}, expected (K, "
                f"{self.feature_size})"
            )
        rows = np.zeros((k, self.width), np.float32)
        g = np.zeros(k) if global_scores is None else np.asarray(global_scores, np.float64)
        column = None if global_scores is None else g[:, None]
        given = {"last": cand, "mean": mean_candidates, "signals": signals, "global": column}
        for block, (lo, hi) in self._groups.items():
            value = given[block]
            if value is None:
                continue
            arr = np.asarray(value, np.float64)
            if arr.shape != (k, hi - lo):
                raise FeatureError(f"set {set_id!r}: {block} block has shape {arr.shape}")
            # Only differences within a set matter: store deviations from the set's
            # mean, which keeps float32 passes exact where all answers share a large
            # offset (hidden states do).
            deviations = arr - arr.mean(0)
            rows[:, lo:hi] = deviations
            if k > 1:  # within-set spread, for the standardisation
                self._ss[lo:hi] += (deviations**2).sum(0)
                self._count[block] += k - 1
                self._scale_cache = None
        self._grow(k)
        start, stored = self._rows, self._stored
        self._x[stored : stored + k - 1] = rows[1:]
        self._row_of[stored : stored + k - 1] = np.arange(start + 1, start + k)
        self._first_of[stored : stored + k - 1] = start
        self._set_of[stored : stored + k - 1] = len(self._sets)
        self._g[start : start + k] = g
        for head in self._heads:
            head.h[start : start + k] = rows @ head.v.astype(np.float32)
            if head.filled:
                dirs = head.dirs[: head.filled].T.astype(np.float32)
                head.dir_rows[start : start + k, : head.filled] = rows @ dirs
        if len(self._sets) % self.config.refresh_block == 0:
            self._block_starts.append((start, stored))
        self._rows += k
        self._stored += k - 1
        self._sets[set_id] = _Set(start, k)
        self._firsts.append(start)

    def set_reactions(self, set_id: str, reactions: Sequence[Reaction]) -> None:
        """Replace a set's preferences with those its reactions (all so far) state.

        A set's first preferences are scored by every head before any head
        learns from them: that loss is the head's prequential evidence (``mix``)."""
        entry = self._sets[set_id]
        for r in reactions:
            if not all(0 <= i < entry.k for i in (r.candidate, *r.rejected)):
                raise TrainingError(f"set {set_id!r}: candidate index out of range in {r}")
        local = preference_pairs(reactions, entry.k, self.config.implicit_weight)
        fresh = not len(entry.pairs.weights)
        entry.pairs = local.shifted(entry.start)
        if fresh:
            for head in self._heads:
                loss = _pair_loss(entry.pairs, self._margins(entry.pairs, head))
                head.evidence = self.config.evidence_decay * head.evidence + loss
        if fresh and self._pairs is not None:  # the common case: one new set, append
            self._pairs = Pairs.concat([self._pairs, entry.pairs])
        else:
            self._pairs = None

    def pairs(self, set_ids: Iterable[str] | None = None) -> Pairs:
        """The preferences of the given sets (default: all), in row indices."""
        if set_ids is not None:
            return Pairs.concat(self._sets[s].pairs for s in set_ids if s in self._sets)
        if self._pairs is None:
            self._pairs = Pairs.concat(s.pairs for s in self._sets.values())
        return self._pairs

    # -- the heads and their mix ---------------------------------------------------------
    def mix(self) -> np.ndarray:
        """Each head's share of the ranking head: Hedge (Freund and Schapire 1997) on
        the prequential pair log-loss, ``exp(-mix_rate * evidence)`` normalised.

        A head's evidence is the log-loss of every set's preferences as that head
        scored them *before* learning from them (progressive validation), older
        sets discounted by ``evidence_decay``, so it measures how well the head's
        prior generalises for this user now, which a training loss cannot. At
        ``mix_rate = 1`` and no decay the shares are a Bayesian posterior over the
        heads read as predictive models; ``inf`` keeps the best head alone. A mix
        of linear heads over the same inputs is one linear head, so the ONNX graph
        is the same whatever the mix."""
        evidence = np.array([head.evidence for head in self._heads])
        if np.isinf(self.config.mix_rate):
            share = np.zeros(len(evidence))
            share[int(np.argmin(evidence))] = 1.0
            return share
        weights = np.exp(-self.config.mix_rate * (evidence - evidence.min()))
        return weights / weights.sum()

    @property
    def evidence(self) -> tuple[float, ...]:
        """Each head's prequential loss so far (see ``mix``), in ``head_priors`` order."""
        return tuple(head.evidence for head in self._heads)

    @property
    def v(self) -> np.ndarray:
        """The ranking head's weights in raw feature space: the heads' mix."""
        share = self.mix()
        return np.sum([a * head.v for a, head in zip(share, self._heads, strict=True)], axis=0)

    @property
    def global_weight(self) -> float:
        """u: the global score counts ``1 + u`` times (0 when u is not fitted)."""
        return 0.0 if self._global_col is None else float(self.v[self._global_col])

    def head(self) -> TasteHead:
        """The current weights (the heads' mix) as a head for ``compose_ranker``."""
        v = self.v
        weights = {b: v[lo:hi].astype(np.float32) for b, (lo, hi) in self._spans.items()}
        u = 0.0 if self._global_col is None else float(v[self._global_col])
        return TasteHead(weights, global_weight=u)

    def start_from(self, head: TasteHead | None, evidence: Sequence[float] | None = None) -> None:
        """Give every head ``head``'s weights (None: zeros) for the blocks both have,
        and its u when this fit has one; forget memory. ``evidence`` (one value per
        head, e.g. what a saved version recorded) restores the mix; else it restarts
        even."""
        v = np.zeros(self.width)
        if head is not None:
            if head.feature_size != self.feature_size:
                raise FeatureError(
                    f"saved head reads {head.feature_size} features, feedback has "
                    f"{self.feature_size}"
                )
            for block, (lo, hi) in self._spans.items():
                if block in head.weights:
                    v[lo:hi] = head.weights[block]
            if self._global_col is not None:
                v[self._global_col] = head.global_weight
        restored = evidence is not None and len(evidence) == len(self._heads)
        h = self._times(v)
        for i, state in enumerate(self._heads):
            state.v = v.copy()
            state.h[: self._rows] = h
            state.filled = state.next = 0
            state.evidence = float(evidence[i]) if restored and evidence is not None else 0.0

    # -- the objective -----------------------------------------------------------------
    def _scale(self, head: _Head | None = None) -> np.ndarray:
        """Raw -> standardised factor per coordinate (group width and within-set
        spread), times ``head``'s prior (the first head's by default)."""
        if self._scale_cache is None:
            self._scale_cache = self._compute_scale()
        return self._scale_cache * (self._heads[0] if head is None else head).root_prior

    def _compute_scale(self) -> np.ndarray:
        return 1.0 / np.sqrt(self._variance() * self._group_width)

    def _variance(self) -> np.ndarray:
        """The within-set variance the standardisation divides by, per coordinate:
        its own (shrunk towards its group's mean by ``variance_prior`` pseudo-counts)
        in the groups of ``config.standardise_each``, the group's mean in the others
        (1 where nothing was seen)."""
        var = np.ones(self.width)
        prior = self.config.variance_prior
        for group, (lo, hi) in self._groups.items():
            n = self._count[group]
            if n > 0:
                mean_var = float(self._ss[lo:hi].mean()) / n
                if mean_var > 0 and group in self.config.standardise_each:
                    var[lo:hi] = (self._ss[lo:hi] + prior * mean_var) / (n + prior)
                elif mean_var > 0:
                    var[lo:hi] = mean_var
        return var

    def _margins(self, pairs: Pairs, head: _Head) -> np.ndarray:
        total = self._g[: self._rows] + head.h[: self._rows]
        return total[pairs.winners] - total[pairs.losers]

    def loss(self, set_ids: Iterable[str] | None = None) -> float:
        """Mean pair loss (weighted, no penalty) of the ranking head (the mix) over
        the given sets' pairs; nan if none."""
        pairs = self.pairs(set_ids)
        if not len(pairs.weights):
            return float("nan")
        share = self.mix()
        margins = sum(a * self._margins(pairs, h) for a, h in zip(share, self._heads, strict=True))
        return _pair_loss(pairs, np.asarray(margins)) / float(pairs.weights.sum())

    def _row_gradient(self, pairs: Pairs, margins: np.ndarray) -> np.ndarray:
        """d(pair loss)/d(row score) for every row."""
        push = pairs.weights * _sigmoid(-margins)  # how hard each pair pulls its winner up
        return np.bincount(pairs.losers, push, self._rows) - np.bincount(
            pairs.winners, push, self._rows
        )

    def fit(self, max_passes: int | None = None, refresh: float | None = None) -> FitReport:
        """Move every head towards the optimum of its objective on the current data:
        at most ``max_passes`` outer iterations each (default ``config.passes``),
        fewer once converged.

        ``refresh`` (default ``config.refresh``) is the share of sets whose
        gradient each iteration recomputes, the most stale first; 1 computes the
        exact gradient. Whether to stop is always decided on the exact gradient.
        The heads step in lockstep (a product over the rows per head). The report's loss and
        gradient are those of the head with the largest share of the mix."""
        started, cpu = time.perf_counter(), time.process_time()
        pairs = self.pairs()
        total_weight = float(pairs.weights.sum())
        if total_weight == 0:
            return FitReport(0, float("nan"), 0.0, time.perf_counter() - started, 0.0)
        share = self.config.refresh if refresh is None else refresh
        limit = self.config.passes if max_passes is None else max_passes
        runs = [_Run(head, self._scale(head)) for head in self._heads]
        active = runs
        for passes in range(1, limit + 1):
            if not active:
                break
            grads = [self._row_gradient(pairs, self._margins(pairs, run.head)) for run in active]
            read = self._refresh([run.head for run in active], grads, share)
            moving: list[_Run] = []
            for run, r in zip(active, grads, strict=True):
                run.passes, run.refreshed = passes, run.refreshed + read
                run.gradient = self._gradient_norm(run)
                if run.gradient <= self.config.tolerance * total_weight and share < 1:
                    run.refreshed += self._refresh([run.head], [r], 1.0)  # confirm: exact
                    run.gradient = self._gradient_norm(run)
                if run.gradient <= self.config.tolerance * total_weight:
                    run.objective = None  # converged: computed below
                else:
                    moving.append(run)
            if moving:
                directions = np.stack([-(run.scale**2) * self._gradient(run) for run in moving])
                products = self._times(directions.T)
                for j, run in enumerate(moving):
                    run.objective = self._step(run, pairs, directions[j], products[:, j])
            active = moving
        mix = self.mix()
        best = runs[int(np.argmax(mix))]
        objective = best.objective
        if objective is None:
            objective = self._objective(pairs, best.head)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        return FitReport(
            max(run.passes for run in runs),
            objective / total_weight,
            best.gradient / total_weight,
            seconds,
            float(np.mean([run.refreshed / max(run.passes, 1) for run in runs])),
            cpu,
            tuple(float(a) for a in mix),
        )

    def _gradient(self, run: _Run) -> np.ndarray:
        """The head's objective gradient in raw coordinates, with its kept data term."""
        return run.head.g_ref + self.config.l2 * run.head.v / run.scale**2

    def _gradient_norm(self, run: _Run) -> float:
        return float(np.linalg.norm(run.scale * self._gradient(run)))

    def _refresh(self, heads: Sequence[_Head], grads: Sequence[np.ndarray], share: float) -> float:
        """Bring each head's ``g_ref`` closer to the gradient for its row derivatives
        (``grads``, one array per head): recompute it for the ``share`` of sets whose
        derivatives moved most since their last refresh, summed over the heads (all
        of them, exactly, at 1). Returns the rows' share.

        Reading only part of the history per iteration is what keeps one update
        per event cheap at wide features; the sets whose derivatives barely moved
        (old, settled feedback) contribute their last value, as in SAGA
        (Defazio et al. 2014), and a new set, whose stale value is 0, goes first.
        """
        n, x = self._rows, self._x[: self._stored]
        r = np.stack(grads, axis=1)  # (rows, heads)
        if share >= 1:
            products = _times_rows(self._stored_weights(r).astype(np.float32), x).astype(np.float64)
            for j, head in enumerate(heads):
                head.r_ref[:n] = r[:, j]
                head.g_ref = products[j]
            return 1.0
        blocks = np.asarray(self._block_starts, np.int64).reshape(-1, 2)
        starts, stored_starts = blocks[:, 0], blocks[:, 1]
        delta = r - np.stack([head.r_ref[:n] for head in heads], axis=1)
        moved = np.abs(delta)  # each head's staleness counts as a share of its own total
        stale = np.add.reduceat(moved / np.maximum(moved.sum(0), 1e-300), starts).sum(1)
        count = min(len(starts), max(1, int(np.ceil(share * len(starts)))))
        chosen = np.sort(np.argpartition(-stale, count - 1)[:count])
        ends = np.append(starts[1:], n)
        stored_ends = np.append(stored_starts[1:], self._stored)
        weights = self._stored_weights(delta).astype(np.float32)
        # Consecutive chosen blocks (often the newest ones) are read as one run.
        breaks = np.flatnonzero(np.diff(chosen) > 1) + 1
        rows, change = 0, np.zeros((len(heads), self.width), np.float32)
        for run in np.split(chosen, breaks):
            lo, hi = int(stored_starts[run[0]]), int(stored_ends[run[-1]])
            change += _times_rows(weights[lo:hi], x[lo:hi])
            lo, hi = int(starts[run[0]]), int(ends[run[-1]])
            for j, head in enumerate(heads):
                head.r_ref[lo:hi] = r[lo:hi, j]
            rows += hi - lo
        for j, head in enumerate(heads):
            head.g_ref = head.g_ref + change[j]
        return rows / n

    def _objective(self, pairs: Pairs, head: _Head | None = None) -> float:
        """A head's objective (the first head's by default)."""
        head = self._heads[0] if head is None else head
        s = self._scale(head)
        data = _pair_loss(pairs, self._margins(pairs, head))
        return data + 0.5 * self.config.l2 * float(((head.v / s) ** 2).sum())

    def _step(
        self, run: _Run, pairs: Pairs, direction: np.ndarray, direction_rows: np.ndarray
    ) -> float:
        """Minimise exactly over v + [direction, memory] @ a, remember the step, and
        return the objective reached."""
        head, penalty = run.head, 1.0 / run.scale**2
        used = head.filled
        dirs = head.dirs[:used]
        memory_rows = head.dir_rows[: self._rows, :used]
        w, lo = pairs.winners, pairs.losers
        diffs = np.empty((len(w), used + 1))
        diffs[:, 0] = direction_rows[w] - direction_rows[lo]
        diffs[:, 1:] = memory_rows[w] - memory_rows[lo]
        # The L2 term restricted to the span: linear and quadratic coefficients.
        pv, pd = penalty * head.v, penalty * direction
        weighted = dirs * penalty
        quadratic = np.empty((used + 1, used + 1))
        quadratic[0, 0] = direction @ pd
        quadratic[0, 1:] = quadratic[1:, 0] = dirs @ pd
        quadratic[1:, 1:] = weighted @ dirs.T
        linear = np.concatenate([[direction @ pv], dirs @ pv])
        l2 = self.config.l2
        a, value = _newton_in_span(diffs, self._margins(pairs, head), pairs.weights,
                                   l2 * linear, l2 * quadratic)  # fmt: skip
        step = direction * a[0] + a[1:] @ dirs
        step_rows = direction_rows * a[0] + memory_rows @ a[1:]
        objective = value + 0.5 * l2 * float(head.v @ pv)
        head.v = head.v + step
        head.h[: self._rows] += step_rows
        if self.config.memory:  # overwrite the oldest remembered step
            head.dirs[head.next] = step
            head.dir_rows[: self._rows, head.next] = step_rows
            head.next = (head.next + 1) % self.config.memory
            head.filled = min(head.filled + 1, self.config.memory)
        return objective


def _rows_times(rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``rows @ u`` for a vector or a matrix with a column per head, one product per
    column: with this OpenBLAS a (4096-d rows) x (2 columns) product costs more than
    two matrix-vector ones (8.2 against 7.1 ms at 1,400 x 8,193 float32)."""
    if u.ndim == 1:
        return rows @ u
    return np.stack([rows @ np.ascontiguousarray(column) for column in u.T], axis=1)


def _times_rows(weights: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``weights.T @ rows`` (one weight column per head), one product per column: the
    transposed 2-column product costs 13.8 ms at 1,400 x 8,193 float32, two
    vector-matrix ones 8.8."""
    return np.stack([np.ascontiguousarray(column) @ rows for column in weights.T])


def _pair_loss(pairs: Pairs, margins: np.ndarray) -> float:
    """Summed weighted Bradley-Terry loss of the pairs at these margins."""
    return float((pairs.weights * np.logaddexp(0.0, -margins)).sum())


def _resized(array: np.ndarray, capacity: int, used: int) -> np.ndarray:
    """``array`` with ``capacity`` rows, its first ``used`` rows kept, the rest 0."""
    out = np.zeros((capacity, *array.shape[1:]), array.dtype)
    out[:used] = array[:used]
    return out


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _newton_in_span(
    diffs: np.ndarray,
    margins: np.ndarray,
    weights: np.ndarray,
    linear: np.ndarray,
    quadratic: np.ndarray,
    iterations: int = 30,
) -> tuple[np.ndarray, float]:
    """argmin over a of  sum w * softplus(-(m + diffs @ a)) + linear . a + a Q a / 2,
    and the minimum.

    ``diffs`` (N, c) is each pair's winner-minus-loser row products with the c
    directions; ``linear`` and ``quadratic`` are the L2 penalty's terms. A
    damped Newton method on c <= memory + 1 unknowns.
    """
    c = diffs.shape[1]
    a, m = np.zeros(c), margins
    ridge = 1e-10 * max(1.0, float(np.trace(quadratic)) / max(c, 1)) * np.eye(c)
    enough = 1e-11 * max(1.0, float(weights.sum()))  # predicted decrease at which to stop
    current = float((weights * np.logaddexp(0.0, -m)).sum())
    for _ in range(iterations):
        p = _sigmoid(-m)
        grad = -(diffs.T @ (weights * p)) + linear + quadratic @ a
        hess = diffs.T @ (diffs * (weights * p * (1 - p))[:, None]) + quadratic
        try:
            step = np.linalg.solve(hess + ridge, -grad)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(hess, -grad, rcond=None)[0]
        decrease = float(grad @ step)
        if -decrease <= enough:
            break
        t = 1.0
        while t > 1e-6:  # backtracking; the full Newton step is nearly always taken
            trial = a + t * step
            trial_m = margins + diffs @ trial
            value = float(
                (weights * np.logaddexp(0.0, -trial_m)).sum()
                + linear @ trial
                + 0.5 * trial @ quadratic @ trial
            )
            if value <= current + 1e-4 * t * decrease:
                break
            t *= 0.5
        else:
            break
        a, m, current = trial, trial_m, value
    return a, current
