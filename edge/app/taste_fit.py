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

where ``s`` standardises each coordinate by its spread *within* sets (shrunk
towards its block's average by ``variance_prior`` pseudo-counts) and divides a
block by the square root of its width, so each block carries the same total
weight: 21 signals are not drowned by 576 or 4096 hidden dimensions. ``v = 0``
(and ``u = 0``) is the global ranker, where a new user starts.

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
(``tests/edge/app/test_taste_fit.py``).

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

__all__ = ["FitReport", "Pairs", "Reaction", "TasteConfig", "TasteFit", "preference_pairs"]


@dataclass
class TasteConfig:
    """How the torch-free learner fits each user's taste head."""

    l2: float = 1.0  # pull towards the global ranker (v = 0), in standardised units
    implicit_weight: float = 1.0  # total weight of a lone thumb vs its set's unrated answers
    use_mean: bool = True  # read the mean vectors when the events carry them
    use_signals: bool = True  # read the on-device signals block
    variance_prior: float = 8.0  # pseudo-count shrinking each variance to its block's mean
    memory: int = 8  # past steps kept as extra directions of the subspace solve
    passes: int = 1  # outer iterations per new event
    cold_passes: int = 40  # outer iterations at most per update, and from a cold start
    refresh: float = 0.25  # share of sets whose gradient a warm iteration recomputes
    refresh_block: int = 4  # consecutive sets refreshed together (one matrix product)
    tolerance: float = 1e-3  # stop when |standardised gradient| <= this x total pair weight
    history: int = 1000  # newest events a learner reads when it (re)builds a user's rows
    global_weight: bool = True  # fit u in (1 + u) * global score (False: u stays 0)
    min_new_events: int = 1  # skip an update until this many events are new

    def __post_init__(self) -> None:
        if self.l2 <= 0:
            raise TrainingError(f"l2 must be positive, got {self.l2}")
        if self.memory < 0 or self.passes < 1 or self.cold_passes < 1 or self.history < 1:
            raise TrainingError("memory >= 0, passes >= 1, cold_passes >= 1, history >= 1")
        if not 0 < self.refresh <= 1:
            raise TrainingError(f"refresh must be in (0, 1], got {self.refresh}")


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


@dataclass
class _Set:
    start: int  # first row of the set's candidates
    k: int  # number of candidates
    pairs: Pairs = field(default_factory=Pairs.empty)  # in row indices


class TasteFit:
    """One user's rows, preferences and head weights, updated in place per event.

    ``has_global``: the sets come with a global ranker's scores, so (with
    ``config.global_weight``) the rows end with the global score's column and
    ``v``'s last coordinate is ``u``.
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
        # at K=8. Everything per candidate (``_g``, ``_h``, ...) has all K rows.
        self._x = np.zeros((0, width), np.float32)  # stored rows, capacity grows by doubling
        self._stored = 0  # stored rows in use
        self._row_of = np.zeros(0, np.int64)  # the row each stored row is
        self._first_of = np.zeros(0, np.int64)  # the first row of its set
        self._set_of = np.zeros(0, np.int64)  # the number of its set
        self._firsts: list[int] = []  # first row of each set, in set order
        self._rows = 0
        self._g = np.zeros(0)  # global score per row
        self._h = np.zeros(0)  # head score per row up to a constant per set (rows @ v)
        self._sets: dict[str, _Set] = {}
        self._pairs: Pairs | None = Pairs.empty()  # all sets' pairs; None when stale
        self._ss = np.zeros(width)  # within-set sums of squared deviations per coordinate
        self._count = dict.fromkeys(self._groups, 0)  # deviations summed per group
        self.v = np.zeros(width)  # head weights in raw feature space
        self._scale_cache: np.ndarray | None = None  # _scale() until the statistics change
        # Memory: the last ``config.memory`` steps (columns, overwritten oldest first)
        # and the rows times each of them.
        self._dirs = np.zeros((config.memory, width))  # one remembered step per row
        self._dir_rows = np.zeros((0, config.memory))
        self._filled = 0  # columns of the memory in use
        self._next = 0  # column the next step overwrites
        # The gradient of the data term, kept as rows^T @ r_ref: each row's loss
        # derivative as last computed (a new row's is 0 until its first refresh).
        self._r_ref = np.zeros(0)
        self._g_ref = np.zeros(width)
        # (row, stored row) where every refresh_block-th set starts
        self._block_starts: list[tuple[int, int]] = []

    # -- data ------------------------------------------------------------------------
    @property
    def num_rows(self) -> int:
        return self._rows

    @property
    def num_sets(self) -> int:
        return len(self._sets)

    def has_set(self, set_id: str) -> bool:
        return set_id in self._sets

    def _grow(self, k: int) -> None:
        """Room for one more set of ``k`` rows (``k - 1`` stored)."""
        if self._rows + k > len(self._g):
            capacity = max(self._rows + k, 2 * len(self._g), 64)
            self._dir_rows = _resized(self._dir_rows, capacity, self._rows)
            for name in ("_g", "_h", "_r_ref"):
                setattr(self, name, _resized(getattr(self, name), capacity, self._rows))
        if self._stored + k - 1 > len(self._x):
            capacity = max(self._stored + k - 1, 2 * len(self._x), 64)
            for name in ("_x", "_row_of", "_first_of", "_set_of"):
                setattr(self, name, _resized(getattr(self, name), capacity, self._stored))

    def _times(self, u: np.ndarray) -> np.ndarray:
        """Every row times ``u``: one read of the stored rows."""
        m = self._stored
        stored = (self._x[:m] @ u.astype(np.float32)).astype(np.float64)
        out = np.empty(self._rows)
        out[self._row_of[:m]] = stored
        sums = np.bincount(self._set_of[:m], weights=stored, minlength=len(self._firsts))
        out[self._firsts] = -sums
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
        self._h[start : start + k] = rows @ self.v.astype(np.float32)
        if self._filled:
            used = self._filled
            self._dir_rows[start : start + k, :used] = rows @ self._dirs[:used].T.astype(np.float32)
        if len(self._sets) % self.config.refresh_block == 0:
            self._block_starts.append((start, stored))
        self._rows += k
        self._stored += k - 1
        self._sets[set_id] = _Set(start, k)
        self._firsts.append(start)

    def set_reactions(self, set_id: str, reactions: Sequence[Reaction]) -> None:
        """Replace a set's preferences with those its reactions (all so far) state."""
        entry = self._sets[set_id]
        for r in reactions:
            if not all(0 <= i < entry.k for i in (r.candidate, *r.rejected)):
                raise TrainingError(f"set {set_id!r}: candidate index out of range in {r}")
        local = preference_pairs(reactions, entry.k, self.config.implicit_weight)
        fresh = not len(entry.pairs.weights)
        entry.pairs = local.shifted(entry.start)
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

    # -- the head --------------------------------------------------------------------
    @property
    def global_weight(self) -> float:
        """u: the global score counts ``1 + u`` times (0 when u is not fitted)."""
        return 0.0 if self._global_col is None else float(self.v[self._global_col])

    def head(self) -> TasteHead:
        """The current weights as a head for ``compose_ranker``."""
        weights = {b: self.v[lo:hi].astype(np.float32) for b, (lo, hi) in self._spans.items()}
        return TasteHead(weights, global_weight=self.global_weight)

    def start_from(self, head: TasteHead | None) -> None:
        """Take ``head``'s weights (None: zeros) for the blocks both have, and its u
        when this fit has one; forget memory."""
        self.v = np.zeros(self.width)
        if head is not None:
            if head.feature_size != self.feature_size:
                raise FeatureError(
                    f"saved head reads {head.feature_size} features, feedback has "
                    f"{self.feature_size}"
                )
            for block, (lo, hi) in self._spans.items():
                if block in head.weights:
                    self.v[lo:hi] = head.weights[block]
            if self._global_col is not None:
                self.v[self._global_col] = head.global_weight
        self._h[: self._rows] = self._times(self.v)
        self._filled = self._next = 0

    # -- the objective -----------------------------------------------------------------
    def _scale(self) -> np.ndarray:
        """Raw -> standardised factor per coordinate (group width and within-set spread)."""
        if self._scale_cache is None:
            self._scale_cache = self._compute_scale()
        return self._scale_cache

    def _compute_scale(self) -> np.ndarray:
        s = np.empty(self.width)
        prior = self.config.variance_prior
        for group, (lo, hi) in self._groups.items():
            n = self._count[group]
            var = np.ones(hi - lo)
            if n > 0:
                mean_var = float(self._ss[lo:hi].mean()) / n
                if mean_var > 0:
                    var = (self._ss[lo:hi] + prior * mean_var) / (n + prior)
            s[lo:hi] = 1.0 / np.sqrt(var * (hi - lo))
        return s

    def _margins(self, pairs: Pairs) -> np.ndarray:
        total = self._g[: self._rows] + self._h[: self._rows]
        return total[pairs.winners] - total[pairs.losers]

    def loss(self, set_ids: Iterable[str] | None = None) -> float:
        """Mean pair loss (weighted, no penalty) over the given sets' pairs; nan if none."""
        pairs = self.pairs(set_ids)
        if not len(pairs.weights):
            return float("nan")
        per_pair = np.logaddexp(0.0, -self._margins(pairs))
        return float((pairs.weights * per_pair).sum() / pairs.weights.sum())

    def _row_gradient(self, pairs: Pairs, margins: np.ndarray) -> np.ndarray:
        """d(pair loss)/d(row score) for every row."""
        push = pairs.weights * _sigmoid(-margins)  # how hard each pair pulls its winner up
        return np.bincount(pairs.losers, push, self._rows) - np.bincount(
            pairs.winners, push, self._rows
        )

    def fit(self, max_passes: int | None = None, refresh: float | None = None) -> FitReport:
        """Move v towards the optimum of the current data: at most ``max_passes``
        outer iterations (default ``config.passes``), fewer once converged.

        ``refresh`` (default ``config.refresh``) is the share of sets whose
        gradient each iteration recomputes, the most stale first; 1 computes the
        exact gradient. Whether to stop is always decided on the exact gradient."""
        started, cpu = time.perf_counter(), time.process_time()
        pairs = self.pairs()
        total_weight = float(pairs.weights.sum())
        if total_weight == 0:
            return FitReport(0, float("nan"), 0.0, time.perf_counter() - started, 0.0)
        share = self.config.refresh if refresh is None else refresh
        s = self._scale()
        penalty = 1.0 / s**2
        limit = self.config.passes if max_passes is None else max_passes
        passes, grad_norm, objective, refreshed = 0, 0.0, None, 0.0
        for passes in range(1, limit + 1):  # noqa: B007 (passes is reported)
            r = self._row_gradient(pairs, self._margins(pairs))
            refreshed += self._refresh(r, share)
            grad = self._g_ref + self.config.l2 * penalty * self.v
            grad_norm = float(np.linalg.norm(s * grad)) / total_weight
            if grad_norm <= self.config.tolerance and share < 1:
                refreshed += self._refresh(r, 1.0)  # confirm on the exact gradient
                grad = self._g_ref + self.config.l2 * penalty * self.v
                grad_norm = float(np.linalg.norm(s * grad)) / total_weight
            if grad_norm <= self.config.tolerance:
                objective = None
                break
            direction = -(s**2) * grad
            objective = self._step(pairs, direction, self._times(direction), penalty)
        if objective is None:
            objective = self._objective(pairs)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        return FitReport(
            passes, objective / total_weight, grad_norm, seconds, refreshed / passes, cpu
        )

    def _refresh(self, r: np.ndarray, share: float) -> float:
        """Bring ``_g_ref`` closer to the gradient for the row derivatives ``r``:
        recompute it for the ``share`` of sets whose derivatives moved most since
        their last refresh (all of them, exactly, at 1). Returns the rows' share.

        Reading only part of the history per iteration is what keeps one update
        per event cheap at wide features; the sets whose derivatives barely moved
        (old, settled feedback) contribute their last value, as in SAGA
        (Defazio et al. 2014), and a new set, whose stale value is 0, goes first.
        """
        n, x = self._rows, self._x[: self._stored]
        if share >= 1:
            self._r_ref[:n] = r
            self._g_ref = (self._stored_weights(r).astype(np.float32) @ x).astype(np.float64)
            return 1.0
        blocks = np.asarray(self._block_starts, np.int64).reshape(-1, 2)
        starts, stored_starts = blocks[:, 0], blocks[:, 1]
        delta = r - self._r_ref[:n]
        stale = np.add.reduceat(np.abs(delta), starts)
        count = min(len(starts), max(1, int(np.ceil(share * len(starts)))))
        chosen = np.sort(np.argpartition(-stale, count - 1)[:count])
        ends = np.append(starts[1:], n)
        stored_ends = np.append(stored_starts[1:], self._stored)
        weights = self._stored_weights(delta).astype(np.float32)
        # Consecutive chosen blocks (often the newest ones) are read as one run.
        breaks = np.flatnonzero(np.diff(chosen) > 1) + 1
        rows, change = 0, np.zeros(self.width, np.float32)
        for run in np.split(chosen, breaks):
            lo, hi = int(stored_starts[run[0]]), int(stored_ends[run[-1]])
            change += weights[lo:hi] @ x[lo:hi]
            lo, hi = int(starts[run[0]]), int(ends[run[-1]])
            self._r_ref[lo:hi] = r[lo:hi]
            rows += hi - lo
        self._g_ref += change
        return rows / n

    def _objective(self, pairs: Pairs) -> float:
        s = self._scale()
        data = float((pairs.weights * np.logaddexp(0.0, -self._margins(pairs))).sum())
        return data + 0.5 * self.config.l2 * float(((self.v / s) ** 2).sum())

    def _step(
        self, pairs: Pairs, direction: np.ndarray, direction_rows: np.ndarray, penalty: np.ndarray
    ) -> float:
        """Minimise exactly over v + [direction, memory] @ a, remember the step, and
        return the objective reached."""
        used = self._filled
        dirs = self._dirs[:used]
        memory_rows = self._dir_rows[: self._rows, :used]
        w, lo = pairs.winners, pairs.losers
        diffs = np.empty((len(w), used + 1))
        diffs[:, 0] = direction_rows[w] - direction_rows[lo]
        diffs[:, 1:] = memory_rows[w] - memory_rows[lo]
        # The L2 term restricted to the span: linear and quadratic coefficients.
        pv, pd = penalty * self.v, penalty * direction
        weighted = dirs * penalty
        quadratic = np.empty((used + 1, used + 1))
        quadratic[0, 0] = direction @ pd
        quadratic[0, 1:] = quadratic[1:, 0] = dirs @ pd
        quadratic[1:, 1:] = weighted @ dirs.T
        linear = np.concatenate([[direction @ pv], dirs @ pv])
        l2 = self.config.l2
        a, value = _newton_in_span(diffs, self._margins(pairs), pairs.weights, l2 * linear,
                                   l2 * quadratic)  # fmt: skip
        step = direction * a[0] + a[1:] @ dirs
        step_rows = direction_rows * a[0] + memory_rows @ a[1:]
        objective = value + 0.5 * l2 * float(self.v @ pv)
        self.v += step
        self._h[: self._rows] += step_rows
        if self.config.memory:  # overwrite the oldest remembered step
            self._dirs[self._next] = step
            self._dir_rows[: self._rows, self._next] = step_rows
            self._next = (self._next + 1) % self.config.memory
            self._filled = min(self._filled + 1, self.config.memory)
        return objective


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
