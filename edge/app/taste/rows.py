"""One user's rows: every shown candidate as one row of its parts, kept for the fit.

A row ``x_k`` stacks a candidate's parts in the order of the fit's *layout* (a
mapping of block name -> width: ``edge.runtime.parts.part_layout`` gives the
registry's parts, e.g. the last-token vector, the mean vector, the signals; an
offline study may name blocks of its own) and, when the sets come with a global
ranker's scores and ``u`` is fitted, the global score ``g_k`` as one more
column; a part the set lacks stays 0 (no information). The global scores are
also kept apart, as each row's offset.

Stored as each candidate's *deviation from its set's mean*: only differences
within a set matter, and it keeps float32 products exact where every answer
shares a large offset, as hidden states do. A set's deviations sum to zero, so
its first row is minus the sum of the others and only the K-1 others are
stored: 1/8 less to read per pass at K=8.

The standardisation ``s`` the objective divides by is kept here too, from
running sums of the within-set squared deviations: a group of columns (a part,
or u's column) is scaled by the square root of its width, so each carries the
same total weight whatever its size, and by its within-set spread: coordinate
by coordinate for the groups of ``standardise_each`` (the signals, whose units
differ, each shrunk towards its group's mean by ``variance_prior``
pseudo-counts), as a whole for the others (a hidden-state part). See
docs/taste-learner.md for why.

A block with a basis (``edge.app.taste.basis``: the wide ones) is kept as its
coordinates in that basis, ``P^T x``: the layout still gives the width a set
brings, its group of columns is ``rank`` wide, and everything here (the
products, the standardisation) is in those coordinates; ``TasteFit.weights``
folds the weights back (``v = P a``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edge._errors import FeatureError, TrainingError
from edge.app.taste.basis import PartBasis

__all__ = ["Rows", "SetRows", "resized", "rows_times", "times_rows"]


@dataclass(frozen=True)
class SetRows:
    """One set's rows before they are kept (``Rows.deviations``)."""

    rows: np.ndarray  # (K, D) float32: each candidate's deviation from the set's mean
    offsets: np.ndarray  # (K,) float64: the global ranker's scores (0 without one)
    squares: dict[str, np.ndarray]  # per group the set has: its squared deviations, summed


class Rows:
    """The stored rows of one user's sets, their offsets and their standardisation."""

    def __init__(
        self,
        layout: Mapping[str, int],
        *,
        global_column: bool = False,
        standardise_each: Sequence[str] = (),
        variance_prior: float = 0.0,
        refresh_block: int = 1,
        bases: Mapping[str, PartBasis] | None = None,
    ) -> None:
        if not layout:
            raise TrainingError("rows need at least one block")
        if "global" in layout:
            raise TrainingError("'global' names u's column, not a block")
        if not all(int(w) >= 1 for w in layout.values()):
            raise TrainingError(f"every block needs a width of at least 1, got {dict(layout)}")
        # The blocks in stacking order (edge.runtime.parts.part_layout: the input order).
        # The first is in every set (it says how many candidates a set has); a set
        # may lack the others.
        self.layout: dict[str, int] = {name: int(w) for name, w in layout.items()}
        self.parts: tuple[str, ...] = tuple(self.layout)
        self._standardise_each = tuple(standardise_each)
        self._variance_prior = variance_prior
        self._refresh_block = refresh_block
        # The blocks kept in a basis (their coordinates in it), by name.
        self.bases: dict[str, PartBasis] = {n: b for n, b in (bases or {}).items() if n in layout}
        self._input_width = {**self.layout, "global": 1}  # values per candidate given
        # Column spans: each block's (a basis's rank for a block kept in one), then
        # u's column ("global") when it is fitted.
        self.spans: dict[str, tuple[int, int]] = {}
        width = 0
        for name, size in self.layout.items():
            if name in self.bases:
                if self.bases[name].width != size:
                    raise FeatureError(f"a basis of width {self.bases[name].width} for the "
                                       f"{name} block of {size} values")  # fmt: skip
                size = self.bases[name].rank
            self.spans[name] = (width, width + size)
            width += size
        # groups of columns standardised together: the blocks, and u's column when fitted
        self.groups: dict[str, tuple[int, int]] = dict(self.spans)
        self.global_column: int | None = None  # u's column, when fitted
        if global_column:
            self.global_column = width
            self.groups["global"] = (width, width + 1)
            width += 1
        self.width = width  # D: the length of a row and of v (u last, when fitted)
        self._x = np.zeros((0, width), np.float32)  # stored rows, capacity grows by doubling
        self._stored = 0  # stored rows in use
        self._row_of = np.zeros(0, np.int64)  # the row each stored row is
        self._first_of = np.zeros(0, np.int64)  # the first row of its set
        self._set_of = np.zeros(0, np.int64)  # the number of its set
        self.firsts: list[int] = []  # the first row of each set, in set order
        self.count = 0  # rows (candidates) in use
        self._g = np.zeros(0)  # the global score per row (capacity as every per-row array)
        # (row, stored row) where every refresh_block-th set starts
        self._block_starts: list[tuple[int, int]] = []
        self._ss = np.zeros(width)  # within-set sums of squared deviations per coordinate
        self._n = dict.fromkeys(self.groups, 0)  # deviations summed per group
        self._scale: np.ndarray | None = None  # scale() until the statistics change
        self._group_width = np.ones(width)  # the width of each coordinate's group
        for lo, hi in self.groups.values():
            self._group_width[lo:hi] = hi - lo

    # -- what is held ------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """Rows every per-row array (the offsets, each head's) has room for."""
        return len(self._g)

    @property
    def offsets(self) -> np.ndarray:
        """(rows,) the global ranker's score of each row (0 without one)."""
        return self._g[: self.count]

    @property
    def stored(self) -> np.ndarray:
        """(stored rows, D) float32: the K-1 rows kept per set."""
        return self._x[: self._stored]

    @property
    def num_stored(self) -> int:
        return self._stored

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays held for this user (capacity included; not the bases,
        which every user of a width shares)."""
        arrays = (self._x, self._row_of, self._first_of, self._set_of, self._g, self._ss)
        return sum(a.nbytes for a in arrays) + 8 * 2 * len(self._block_starts)

    @property
    def block_starts(self) -> np.ndarray:
        """(blocks, 2): the (row, stored row) where every ``refresh_block``-th set starts."""
        return np.asarray(self._block_starts, np.int64).reshape(-1, 2)

    # -- adding a set ------------------------------------------------------------------
    def deviations(
        self,
        set_id: str,
        parts: Mapping[str, np.ndarray | None],
        global_scores: np.ndarray | None = None,
    ) -> SetRows:
        """A set's K rows as deviations from the set's mean, from its ``parts`` by name
        ((K, width) each; the first block of the layout required); the blocks it
        lacks stay 0. Checked and computed only: ``add`` keeps them."""
        first = self.parts[0]
        if parts.get(first) is None:
            raise FeatureError(f"set {set_id!r}: the {first!r} part is required")
        lead = np.asarray(parts[first])
        if lead.ndim != 2 or lead.shape[1] != self.layout[first]:
            raise FeatureError(
                f"set {set_id!r}: {first} part has shape {lead.shape}, expected (K, "
                f"{self.layout[first]})"
            )
        k = lead.shape[0]
        rows = np.zeros((k, self.width), np.float32)
        g = np.zeros(k) if global_scores is None else np.asarray(global_scores, np.float64)
        column = None if global_scores is None else g[:, None]
        given = {**parts, "global": column}
        squares: dict[str, np.ndarray] = {}
        for group, (lo, hi) in self.groups.items():
            value = given.get(group)
            if value is None:
                continue
            arr = np.asarray(value, np.float64)
            if arr.shape != (k, self._input_width[group]):
                raise FeatureError(f"set {set_id!r}: {group} part has shape {arr.shape}")
            deviations = arr - arr.mean(0)  # before any projection: exact where all share an offset
            basis = self.bases.get(group)
            if basis is not None:
                deviations = (deviations.astype(np.float32) @ basis.matrix).astype(np.float64)
            rows[:, lo:hi] = deviations
            squares[group] = (deviations**2).sum(0)
        return SetRows(rows, g, squares)

    def add(self, new: SetRows) -> tuple[int, int | None]:
        """Keep a set's rows: returns the set's first row, and the new capacity when the
        per-row arrays grew (None otherwise)."""
        k = len(new.rows)
        if k > 1:  # within-set spread, for the standardisation
            for group, squares in new.squares.items():
                lo, hi = self.groups[group]
                self._ss[lo:hi] += squares
                self._n[group] += k - 1
                self._scale = None
        grown = self._grow(k)
        start, stored = self.count, self._stored
        self._x[stored : stored + k - 1] = new.rows[1:]
        self._row_of[stored : stored + k - 1] = np.arange(start + 1, start + k)
        self._first_of[stored : stored + k - 1] = start
        self._set_of[stored : stored + k - 1] = len(self.firsts)
        self._g[start : start + k] = new.offsets
        if len(self.firsts) % self._refresh_block == 0:
            self._block_starts.append((start, stored))
        self.count += k
        self._stored += k - 1
        self.firsts.append(start)
        return start, grown

    def _grow(self, k: int) -> int | None:
        """Room for one more set of ``k`` rows (``k - 1`` stored)."""
        grown = None
        if self.count + k > len(self._g):
            grown = max(self.count + k, 2 * len(self._g), 64)
            self._g = resized(self._g, grown, self.count)
        if self._stored + k - 1 > len(self._x):
            capacity = max(self._stored + k - 1, 2 * len(self._x), 64)
            for name in ("_x", "_row_of", "_first_of", "_set_of"):
                setattr(self, name, resized(getattr(self, name), capacity, self._stored))
        return grown

    # -- products over the rows -----------------------------------------------------------
    def times(self, u: np.ndarray) -> np.ndarray:
        """Every row times ``u`` (a vector, or a matrix with a column per head): one
        read of the stored rows per column; a set's first row from the others."""
        m = self._stored
        stored = rows_times(self._x[:m], u.astype(np.float32)).astype(np.float64)
        out = np.empty((self.count, *u.shape[1:]))
        out[self._row_of[:m]] = stored
        columns = stored.reshape(m, int(np.prod(u.shape[1:], dtype=int))).T
        sums = [
            np.bincount(self._set_of[:m], weights=c, minlength=len(self.firsts)) for c in columns
        ]
        out[self.firsts] = -np.stack(sums, axis=1).reshape(len(self.firsts), *u.shape[1:])
        return out

    def stored_weights(self, r: np.ndarray) -> np.ndarray:
        """c with stored_rows^T @ c == rows^T @ r: each row's r minus its set's first's."""
        m = self._stored
        return r[self._row_of[:m]] - r[self._first_of[:m]]

    def full(self) -> np.ndarray:
        """(rows, D) float32: every row, the first of each set included (for tests)."""
        m = self._stored
        out = np.zeros((self.count, self.width), np.float32)
        out[self._row_of[:m]] = self._x[:m]
        np.subtract.at(out, self._first_of[:m], self._x[:m])
        return out

    # -- the standardisation -------------------------------------------------------------
    def scale(self) -> np.ndarray:
        """Raw -> standardised factor per coordinate: ``1 / sqrt(variance * group
        width)``, before any head's prior."""
        if self._scale is None:
            self._scale = 1.0 / np.sqrt(self._variance() * self._group_width)
        return self._scale

    def _variance(self) -> np.ndarray:
        """The within-set variance the standardisation divides by, per coordinate:
        its own (shrunk towards its group's mean by ``variance_prior`` pseudo-counts)
        in the groups of ``standardise_each``, the group's mean in the others (1
        where nothing was seen)."""
        var = np.ones(self.width)
        prior = self._variance_prior
        for group, (lo, hi) in self.groups.items():
            n = self._n[group]
            if n > 0:
                mean_var = float(self._ss[lo:hi].mean()) / n
                if mean_var > 0 and group in self._standardise_each:
                    var[lo:hi] = (self._ss[lo:hi] + prior * mean_var) / (n + prior)
                elif mean_var > 0:
                    var[lo:hi] = mean_var
        return var


def resized(array: np.ndarray, capacity: int, used: int) -> np.ndarray:
    """``array`` with ``capacity`` rows, its first ``used`` rows kept, the rest 0."""
    out = np.zeros((capacity, *array.shape[1:]), array.dtype)
    out[:used] = array[:used]
    return out


def rows_times(rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``rows @ u`` for a vector or a matrix with a column per head, one product per
    column: with this OpenBLAS a (4096-d rows) x (2 columns) product costs more than
    two matrix-vector ones (8.2 against 7.1 ms at 1,400 x 8,193 float32)."""
    if u.ndim == 1:
        return rows @ u
    return np.stack([rows @ np.ascontiguousarray(column) for column in u.T], axis=1)


def times_rows(weights: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``weights.T @ rows`` (one weight column per head), one product per column: the
    transposed 2-column product costs 13.8 ms at 1,400 x 8,193 float32, two
    vector-matrix ones 8.8."""
    return np.stack([np.ascontiguousarray(column) @ rows for column in weights.T])
