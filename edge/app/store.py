"""SQLite store of what users were shown and how they reacted (torch-free).

An app first records a *shown* candidate set (instruction feature, K candidate
features, optional texts) and later feedback on it: a thumbs up/down on one
candidate, a pick of one over others, or a real-valued score. Feedback keeps a
reference to its set, so the features needed for training are stored once.

A set keeps what retraining under any representation needs
(``edge.app.records.ShownSet``): per candidate the last-token vector, the mean
vector over the response when central sent one, the text, the model's scalars
(``edge.runtime.scalars``), the on-device signals with their
``SIGNALS_VERSION`` and the lexicon block with its ``LEXICON_VERSION``; every
feedback row records the signals version too. A device part stored under
another version (or, for the lexicon, not at all: a set recorded before schema
3) is recomputed from the text on read (``ShownSet.signal_block``,
``ShownSet.lexicon_block``), so old events stay usable when a part changes.
This module records and queries; the schema, its migration from older releases
and the row layout are ``edge.app._store_schema``'s, and turning events into
training data is ``edge.app.training_data``'s.

Durability: WAL journal, ``synchronous=FULL`` and one transaction per event, so
an acknowledged event survives a crash and a rejected one leaves no trace. A
full disk raises DiskFullError (the event is not recorded; the store stays
usable once there is room), a damaged file CorruptStoreError.
Features are raw float16/float32 bytes with their shape in columns, never
pickles, so a store file cannot execute code. Every query filters by user id:
one user's calls never see another user's rows. The feedback row id is a
monotonically increasing *cursor* that incremental learning resumes from.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from edge._errors import (
    StoreError,
    UnknownCandidateSetError,
    UnknownUserError,
)
from edge.app._store_schema import (
    SHOWN_COLUMNS,
    SHOWN_COLUMNS_S,
    connect,
    decode_event,
    decode_shown,
    sqlite_failure,
)
from edge.app.ids import validate_id
from edge.app.records import FeedbackEvent, FeedbackKind, ShownSet
from edge.runtime.features import as_candidates, as_vector
from edge.runtime.lexicon import LEXICON_VERSION, LEXICON_WIDTH, candidate_lexicon, lexicon_block
from edge.runtime.scalars import Scalars
from edge.runtime.signals import SIGNAL_NAMES, SIGNALS_VERSION, candidate_signals
from edge.runtime.types import Generation

__all__ = ["FeedbackStore"]


class FeedbackStore:
    """Shown candidate sets and feedback events in one SQLite file."""

    def __init__(self, path: str | Path, *, timeout: float = 10.0) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn = connect(self.path, timeout)

    @property
    def schema_version(self) -> int:
        """The schema version of the open store (always the current one after opening)."""
        with self._query() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _query(self) -> Iterator[sqlite3.Connection]:
        """Run statements under the lock, turning a damaged file into CorruptStoreError
        and a full disk into DiskFullError."""
        with self._lock:
            try:
                yield self._conn
            except sqlite3.DatabaseError as exc:
                failure = sqlite_failure(exc, self.path)
                if failure is not None:
                    raise failure from exc
                raise

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: committed as a whole or rolled back as a whole."""
        with self._query() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already (a full disk)
                    conn.execute("ROLLBACK")
                raise

    # -- writing ---------------------------------------------------------------------
    def record_shown(
        self,
        user: str,
        set_id: str,
        instruction: np.ndarray,
        candidates: np.ndarray,
        *,
        texts: Sequence[str] | None = None,
        task: str = "default",
        mean_candidates: np.ndarray | None = None,
        scalars: Scalars | None = None,
        signals: np.ndarray | None = None,
        lexicon: np.ndarray | None = None,
        num_tokens: Sequence[int] | None = None,
        cumulative_logprobs: Sequence[float] | None = None,
        mean_entropies: Sequence[float | None] | None = None,
        finish_reasons: Sequence[str] | None = None,
    ) -> ShownSet:
        """Record that ``user`` was shown these K candidates; feedback may follow.

        Everything after ``task`` is optional, one entry per candidate: the mean
        vectors (same shape as ``candidates``), the model's scalars, the
        on-device signals of the current version (computed here from the texts
        and scalars when not given) and the lexicon block of the current version
        (computed here from the texts when not given; none without texts).
        ``record_generation`` fills all of it from a Generation. The four scalar
        columns by keyword are the old spelling of ``scalars=Scalars(...)``
        (deprecated).
        """
        by_keyword = Scalars(num_tokens, cumulative_logprobs, mean_entropies, finish_reasons)
        if by_keyword.known:
            if scalars is not None:
                raise StoreError("give the scalars as scalars= or as columns, not both")
            warnings.warn(
                "record_shown(num_tokens=..., ...) is deprecated: pass scalars=Scalars(...)",
                DeprecationWarning,
                stacklevel=2,
            )
            scalars = by_keyword
        validate_id(user, "user id")
        validate_id(task, "task")
        if not isinstance(set_id, str) or not set_id:
            raise StoreError(f"set id must be a non-empty string, got {set_id!r}")
        dtype = np.float16 if np.asarray(candidates).dtype == np.float16 else np.float32
        inst = as_vector(instruction, None).astype(dtype)
        cand = as_candidates(candidates, inst.shape[0]).astype(dtype)
        k = int(cand.shape[0])
        mean = None
        if mean_candidates is not None:
            mean = as_candidates(mean_candidates, inst.shape[0], "mean candidate features")
            if mean.shape != cand.shape:
                raise StoreError(f"got {mean.shape[0]} mean vectors for {k} candidates")
            mean = mean.astype(dtype)
        scalars = scalars if scalars is not None else Scalars()
        columns = {"texts": texts, **scalars.columns()}
        for what, values in columns.items():
            if values is not None and len(values) != k:
                raise StoreError(f"got {len(values)} {what} values for {k} candidates")
        shown = ShownSet(
            user,
            set_id,
            task,
            inst,
            cand,
            tuple(texts) if texts is not None else None,
            time.time(),
            mean,
            scalars,
        )
        if signals is None:
            signals = shown.signal_block()
        elif np.shape(signals) != (k, len(SIGNAL_NAMES)):
            raise StoreError(
                f"signals have shape {np.shape(signals)}, expected ({k}, {len(SIGNAL_NAMES)})"
            )
        signals = np.asarray(signals, np.float32)
        if lexicon is None and texts is not None:
            lexicon = lexicon_block(list(texts))
        if lexicon is not None:
            if np.shape(lexicon) != (k, LEXICON_WIDTH):
                raise StoreError(
                    f"lexicon has shape {np.shape(lexicon)}, expected ({k}, {LEXICON_WIDTH})"
                )
            lexicon = np.asarray(lexicon, np.float32)
        lexicon_version = LEXICON_VERSION if lexicon is not None else None
        with self._transaction() as conn:
            try:
                conn.execute(
                    "INSERT INTO shown (user_id, set_id, task, created, dtype, feature_size, k,"
                    " instruction, candidates, texts, mean_candidates, scalars, signals,"
                    " signals_version, lexicon, lexicon_version)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        user,
                        set_id,
                        task,
                        shown.created,
                        np.dtype(dtype).name,
                        int(cand.shape[1]),
                        k,
                        inst.tobytes(),
                        cand.tobytes(),
                        json.dumps(list(texts)) if texts is not None else None,
                        mean.tobytes() if mean is not None else None,
                        scalars.to_json(),
                        signals.tobytes(),
                        SIGNALS_VERSION,
                        lexicon.tobytes() if lexicon is not None else None,
                        lexicon_version,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise StoreError(
                    f"candidate set {set_id!r} was already recorded for user {user!r}"
                ) from exc
        return dataclasses.replace(
            shown,
            signals=signals,
            signals_version=SIGNALS_VERSION,
            lexicon=lexicon,
            lexicon_version=lexicon_version,
        )

    def record_generation(
        self,
        user: str,
        set_id: str,
        generation: Generation,
        *,
        task: str = "default",
        signals: np.ndarray | None = None,
        lexicon: np.ndarray | None = None,
    ) -> ShownSet:
        """Record a Generation as shown: vectors, mean vectors if every candidate has
        one, texts, scalars, signals and lexicon (``signals``, ``lexicon``: the
        candidates' own, when the caller has already computed them to rank with)."""
        cands = generation.candidates
        means = [c.mean_feature for c in cands if c.mean_feature is not None]
        return self.record_shown(
            user,
            set_id,
            generation.instruction,
            generation.features,
            texts=[c.text for c in cands],
            task=task,
            mean_candidates=np.stack(means) if means and len(means) == len(cands) else None,
            scalars=Scalars.of(cands),
            signals=candidate_signals(cands) if signals is None else signals,
            lexicon=candidate_lexicon(cands) if lexicon is None else lexicon,
        )

    def _shown_row(self, conn: sqlite3.Connection, user: str, set_id: str) -> tuple[int, int]:
        row = conn.execute(
            "SELECT row_id, k FROM shown WHERE user_id = ? AND set_id = ?", (user, set_id)
        ).fetchone()
        if row is None:
            raise UnknownCandidateSetError(user, set_id)
        return int(row[0]), int(row[1])

    def _insert_event(
        self,
        user: str,
        set_id: str,
        kind: FeedbackKind,
        candidate: int,
        value: float | None,
        rejected: Sequence[int] = (),
    ) -> int:
        validate_id(user, "user id")
        with self._transaction() as conn:
            row_id, k = self._shown_row(conn, user, set_id)
            for index in (candidate, *rejected):
                if not isinstance(index, int | np.integer) or not 0 <= int(index) < k:
                    raise StoreError(
                        f"candidate index {index!r} is out of range for set {set_id!r} "
                        f"of {k} candidates"
                    )
            cur = conn.execute(
                "INSERT INTO feedback (user_id, shown_id, kind, candidate, value, rejected,"
                " created, signals_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    user,
                    row_id,
                    kind,
                    int(candidate),
                    value,
                    json.dumps([int(r) for r in rejected]) if kind == "pick" else None,
                    time.time(),
                    SIGNALS_VERSION,
                ),
            )
            return int(cur.lastrowid or 0)

    def thumbs(self, user: str, set_id: str, candidate: int, up: bool) -> int:
        """Thumbs up (label 1) or down (label 0) on one candidate; returns the event id."""
        return self._insert_event(user, set_id, "thumb", candidate, 1.0 if up else 0.0)

    def pick(
        self, user: str, set_id: str, chosen: int, rejected: Sequence[int] | None = None
    ) -> int:
        """The user chose ``chosen`` over ``rejected`` (default: every other candidate)."""
        with self._query() as conn:
            _, k = self._shown_row(conn, user, set_id)
        others = [i for i in range(k) if i != chosen] if rejected is None else list(rejected)
        if chosen in others:
            raise StoreError(f"candidate {chosen} cannot be both chosen and rejected")
        if not others:
            raise StoreError("a pick needs at least one rejected candidate")
        return self._insert_event(user, set_id, "pick", chosen, None, others)

    def score(self, user: str, set_id: str, candidate: int, value: float) -> int:
        """A real-valued rating of one candidate (e.g. 1-5 stars); returns the event id."""
        value = float(value)
        if not np.isfinite(value):
            raise StoreError(f"score must be finite, got {value}")
        return self._insert_event(user, set_id, "score", candidate, value)

    # -- reading ---------------------------------------------------------------------
    def users(self) -> list[str]:
        with self._query() as conn:
            rows = conn.execute("SELECT DISTINCT user_id FROM shown ORDER BY user_id")
            return [r[0] for r in rows]

    def _check_user(self, conn: sqlite3.Connection, user: str) -> None:
        if conn.execute("SELECT 1 FROM shown WHERE user_id = ? LIMIT 1", (user,)).fetchone():
            return
        raise UnknownUserError(user, f"feedback store {self.path}")

    def shown(self, user: str, set_id: str) -> ShownSet:
        with self._query() as conn:
            row = conn.execute(
                f"SELECT {SHOWN_COLUMNS} FROM shown WHERE user_id = ? AND set_id = ?",
                (user, set_id),
            ).fetchone()
        if row is None:
            raise UnknownCandidateSetError(user, set_id)
        return decode_shown(row, self.path)

    def recent_sets(self, user: str, *, task: str | None = None, limit: int = 10) -> list[ShownSet]:
        """The user's most recently shown sets, newest first (of ``task`` when given)."""
        return self._newest_sets(user, "", [], task, limit)

    def find_set(self, user: str, reference: str, *, task: str | None = None) -> ShownSet:
        """The user's set whose id is ``reference`` or starts with it (of ``task``
        when given): what a person types after seeing a short id. An unknown or
        ambiguous reference raises UnknownCandidateSetError or StoreError."""
        if not reference:
            raise StoreError("a set reference must not be empty")
        where = " AND substr(set_id, 1, ?) = ?"
        found = self._newest_sets(user, where, [len(reference), reference], task, 3)
        exact = [one for one in found if one.set_id == reference]
        if exact or len(found) == 1:
            return (exact or found)[0]
        if not found:
            raise UnknownCandidateSetError(user, reference)
        raise StoreError(f"{reference!r} starts more than one set of user {user!r}: give more")

    def _newest_sets(
        self, user: str, where: str, params: list[object], task: str | None, limit: int
    ) -> list[ShownSet]:
        """The user's sets matching ``where`` (and ``task``), newest first."""
        sql = f"SELECT {SHOWN_COLUMNS} FROM shown WHERE user_id = ?{where}"
        params = [user, *params]
        if task is not None:
            sql += " AND task = ?"
            params.append(task)
        with self._query() as conn:
            rows = conn.execute(f"{sql} ORDER BY row_id DESC LIMIT ?", [*params, int(limit)])
            return [decode_shown(row, self.path) for row in rows.fetchall()]

    def _select_events(
        self, where: str, params: Sequence[object], limit: int | None = None
    ) -> list[FeedbackEvent]:
        sql = (
            "SELECT f.event_id, f.kind, f.candidate, f.value, f.rejected, f.created, "
            f"f.signals_version, {SHOWN_COLUMNS_S} "
            "FROM feedback f JOIN shown s ON s.row_id = f.shown_id "
            f"WHERE {where} ORDER BY f.event_id"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"

        with self._query() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [decode_event(r, self.path) for r in rows]

    def events(
        self, user: str, *, since: int = 0, task: str | None = None, limit: int | None = None
    ) -> list[FeedbackEvent]:
        """The user's events with id > ``since``, oldest first (``since=0``: all)."""
        with self._query() as conn:
            self._check_user(conn, user)
        where, params = "f.user_id = ? AND s.user_id = ? AND f.event_id > ?", [user, user, since]
        if task is not None:
            where += " AND s.task = ?"
            params.append(task)
        return self._select_events(where, params, limit)

    def sample_events(
        self,
        user: str,
        n: int,
        *,
        up_to: int | None = None,
        task: str | None = None,
        seed: int = 0,
    ) -> list[FeedbackEvent]:
        """Up to ``n`` of the user's events with id <= ``up_to``, uniformly at random.

        This is the replay buffer of incremental learning: old examples mixed into
        each update so the ranker does not forget them.
        """
        if n <= 0:
            return []
        where = "f.user_id = ?"
        params: list[object] = [user]
        if up_to is not None:
            where += " AND f.event_id <= ?"
            params.append(up_to)
        if task is not None:
            where += " AND s.task = ?"
            params.append(task)
        with self._query() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    f"SELECT f.event_id FROM feedback f JOIN shown s ON s.row_id = f.shown_id"
                    f" WHERE {where}",
                    params,
                )
            ]
        if not ids:
            return []
        chosen = np.random.default_rng(seed).choice(ids, size=min(n, len(ids)), replace=False)
        marks = ",".join("?" * len(chosen))
        return self._select_events(
            f"f.user_id = ? AND f.event_id IN ({marks})", [user, *map(int, chosen)]
        )

    def last_cursor(self, user: str, task: str | None = None) -> int:
        """Id of the user's newest event (0 when none)."""
        sql = "SELECT MAX(f.event_id) FROM feedback f JOIN shown s ON s.row_id = f.shown_id"
        sql += " WHERE f.user_id = ?" + (" AND s.task = ?" if task is not None else "")
        params = (user, task) if task is not None else (user,)
        with self._query() as conn:
            row = conn.execute(sql, params).fetchone()
        return int(row[0] or 0)
