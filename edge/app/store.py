"""SQLite store of what users were shown and how they reacted (torch-free).

An app first records a *shown* candidate set (instruction feature, K candidate
features, optional texts) and later feedback on it: a thumbs up/down on one
candidate, a pick of one over others, or a real-valued score. Feedback keeps a
reference to its set, so the features needed for training are stored once.

A set keeps what retraining under any representation needs: per candidate the
last-token vector, the mean vector over the response when central sent one, the
text, the model's scalars (token count, cumulative log-probability, mean
entropy, finish reason) and the on-device signals with their
``SIGNALS_VERSION``; every feedback row records the signals version too. Signals
stored under another version are recomputed from the text and scalars on read
(``ShownSet.signal_block``), so old events stay usable when the set changes.

Schema versions: 1 (the first release: vectors and texts) and 2 (adds the mean
vectors, scalars and signals). Opening a version-1 store migrates it in place,
in one transaction; its old sets read with ``mean_candidates`` and scalars None.

Durability: WAL journal, ``synchronous=FULL`` and one transaction per event, so
an acknowledged event survives a crash and a rejected one leaves no trace.
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
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge._errors import (
    CorruptStoreError,
    StoreError,
    UnknownCandidateSetError,
    UnknownUserError,
)
from edge.app.dataset import Group, GroupDataset, Pair, Part
from edge.app.registry import validate_id
from edge.runtime.features import as_candidates, as_vector
from edge.runtime.signals import SIGNALS_VERSION, text_signals
from edge.runtime.types import Generation

__all__ = ["FeedbackEvent", "FeedbackKind", "FeedbackStore", "ShownSet", "events_to_dataset"]

FeedbackKind = Literal["thumb", "pick", "score"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS shown (
    row_id INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    set_id TEXT NOT NULL,
    task TEXT NOT NULL,
    created REAL NOT NULL,
    dtype TEXT NOT NULL CHECK (dtype IN ('float16', 'float32')),
    feature_size INTEGER NOT NULL,
    k INTEGER NOT NULL,
    instruction BLOB NOT NULL,
    candidates BLOB NOT NULL,
    texts TEXT,
    mean_candidates BLOB,
    scalars TEXT,
    signals BLOB,
    signals_version INTEGER,
    UNIQUE (user_id, set_id)
);
CREATE TABLE IF NOT EXISTS feedback (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    shown_id INTEGER NOT NULL REFERENCES shown (row_id),
    kind TEXT NOT NULL CHECK (kind IN ('thumb', 'pick', 'score')),
    candidate INTEGER NOT NULL,
    value REAL,
    rejected TEXT,
    created REAL NOT NULL,
    signals_version INTEGER
);
CREATE INDEX IF NOT EXISTS feedback_by_user ON feedback (user_id, event_id);
"""
_SCHEMA_VERSION = 2
# Columns each schema version added, applied in order to migrate an older store.
_ADDED_COLUMNS: dict[int, list[tuple[str, str, str]]] = {
    2: [
        ("shown", "mean_candidates", "BLOB"),
        ("shown", "scalars", "TEXT"),
        ("shown", "signals", "BLOB"),
        ("shown", "signals_version", "INTEGER"),
        ("feedback", "signals_version", "INTEGER"),
    ],
}
_CORRUPTION_HINTS = ("malformed", "not a database", "encrypted", "disk image", "corrupt")


@dataclass(frozen=True)
class ShownSet:
    """A candidate set as it was shown to a user."""

    user: str  # who saw it
    set_id: str  # the app's id for this set (unique per user)
    task: str  # which ranker it belongs to, e.g. "chat" or "math"
    instruction: np.ndarray = field(repr=False)  # (d,) as stored (float16 or float32)
    candidates: np.ndarray = field(repr=False)  # (K, d) as stored
    texts: tuple[str, ...] | None = None  # candidate texts, if the app stored them
    created: float = 0.0  # unix time it was recorded
    # (K, d) mean over each response's tokens, as stored; None when central sent none
    # or the set predates schema 2
    mean_candidates: np.ndarray | None = field(default=None, repr=False)
    num_tokens: tuple[int, ...] | None = None  # generated tokens per candidate
    cumulative_logprobs: tuple[float, ...] | None = None  # sum of token log-probs per candidate
    mean_entropies: tuple[float | None, ...] | None = None  # None where central sent none
    finish_reasons: tuple[str, ...] | None = None  # "eos" or "length" per candidate
    signals: np.ndarray | None = field(default=None, repr=False)  # (K, S) as recorded
    signals_version: int | None = None  # SIGNALS_VERSION of ``signals``

    @property
    def k(self) -> int:
        return int(self.candidates.shape[0])

    def signal_block(self) -> np.ndarray:
        """(K, S) signals of the current SIGNALS_VERSION: as stored when they are of
        this version, else recomputed from the stored texts and scalars."""
        if self.signals is not None and self.signals_version == SIGNALS_VERSION:
            return self.signals
        return text_signals(
            self.texts if self.texts is not None else [""] * self.k,
            num_tokens=self.num_tokens,
            cumulative_logprobs=self.cumulative_logprobs,
            mean_entropies=self.mean_entropies,
            finish_reasons=self.finish_reasons,
        )


@dataclass(frozen=True)
class FeedbackEvent:
    """One reaction of a user to a shown set."""

    event_id: int  # increasing cursor; events(since=c) returns ids > c
    kind: FeedbackKind  # "thumb", "pick" or "score"
    candidate: int  # thumbed / chosen / scored candidate index within the set
    value: float | None  # thumb: 1.0 up / 0.0 down; score: the value; pick: None
    rejected: tuple[int, ...]  # pick: indices passed over; empty otherwise
    created: float  # unix time of the event
    shown: ShownSet = field(repr=False)  # the set it refers to, with its features
    signals_version: int | None = None  # SIGNALS_VERSION when recorded; None before schema 2

    @property
    def user(self) -> str:
        return self.shown.user

    @property
    def set_id(self) -> str:
        return self.shown.set_id


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    if isinstance(exc, sqlite3.IntegrityError):
        return False
    text = str(exc).lower()
    return type(exc) is sqlite3.DatabaseError or any(h in text for h in _CORRUPTION_HINTS)


class FeedbackStore:
    """Shown candidate sets and feedback events in one SQLite file."""

    def __init__(self, path: str | Path, *, timeout: float = 10.0) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn = self._open(timeout)

    # -- connection ------------------------------------------------------------------
    def _open(self, timeout: float) -> sqlite3.Connection:
        """Connect, check integrity *before* writing anything, then ensure the schema."""
        if self.path.is_dir():
            raise CorruptStoreError(self.path, "is a directory")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        try:
            status = conn.execute("PRAGMA quick_check").fetchone()[0]
            if status != "ok":
                raise CorruptStoreError(self.path, f"integrity check says {status!r}")
            self._refuse_newer(conn)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.executescript(_SCHEMA)
            self._migrate(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise CorruptStoreError(self.path, str(exc)) from exc
        except StoreError:
            conn.close()
            raise
        return conn

    def _refuse_newer(self, conn: sqlite3.Connection) -> None:
        """Raise StoreError, before anything is written, for a newer release's store."""
        has_meta = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        if not has_meta:
            return
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        found = int(row[0]) if row is not None and str(row[0]).isdigit() else 0
        if found > _SCHEMA_VERSION:
            raise StoreError(
                f"feedback store {self.path} has schema version {found}, written by a "
                f"newer release; this release reads up to version {_SCHEMA_VERSION}"
            )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring an older schema up to _SCHEMA_VERSION in one transaction.

        Columns are added where the table lacks them rather than trusting the
        recorded version alone, so a store whose first open was cut short between
        creating the tables and recording the version also ends up complete.
        """
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._refuse_newer(conn)
            for version in sorted(_ADDED_COLUMNS):
                for table, column, kind in _ADDED_COLUMNS[version]:
                    have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
                    if column not in have:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(_SCHEMA_VERSION),),
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

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
        """Run reads under the lock, turning corruption into CorruptStoreError."""
        with self._lock:
            try:
                yield self._conn
            except sqlite3.DatabaseError as exc:
                if _is_corruption(exc):
                    raise CorruptStoreError(self.path, str(exc)) from exc
                raise

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: committed as a whole or rolled back as a whole."""
        with self._query() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

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
        num_tokens: Sequence[int] | None = None,
        cumulative_logprobs: Sequence[float] | None = None,
        mean_entropies: Sequence[float | None] | None = None,
        finish_reasons: Sequence[str] | None = None,
    ) -> ShownSet:
        """Record that ``user`` was shown these K candidates; feedback may follow.

        Everything after ``task`` is optional, one entry per candidate: the mean
        vectors (same shape as ``candidates``) and the model's scalars. The
        signals are computed here from the texts and scalars and stored with
        their version. ``record_generation`` fills all of it from a Generation.
        """
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
        columns = {
            "texts": texts,
            "num_tokens": num_tokens,
            "cumulative_logprob": cumulative_logprobs,
            "mean_entropy": mean_entropies,
            "finish_reason": finish_reasons,
        }
        for what, values in columns.items():
            if values is not None and len(values) != k:
                raise StoreError(f"got {len(values)} {what} values for {k} candidates")
        scalars = _scalars_json(num_tokens, cumulative_logprobs, mean_entropies, finish_reasons)
        shown = ShownSet(
            user,
            set_id,
            task,
            inst,
            cand,
            tuple(texts) if texts is not None else None,
            time.time(),
            mean,
            *_decode_scalars(scalars),
        )
        signals = shown.signal_block()
        with self._transaction() as conn:
            try:
                conn.execute(
                    "INSERT INTO shown (user_id, set_id, task, created, dtype, feature_size, k,"
                    " instruction, candidates, texts, mean_candidates, scalars, signals,"
                    " signals_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                        scalars,
                        signals.astype(np.float32).tobytes(),
                        SIGNALS_VERSION,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise StoreError(
                    f"candidate set {set_id!r} was already recorded for user {user!r}"
                ) from exc
        return dataclasses.replace(shown, signals=signals, signals_version=SIGNALS_VERSION)

    def record_generation(
        self, user: str, set_id: str, generation: Generation, *, task: str = "default"
    ) -> ShownSet:
        """Record a Generation as shown: vectors, mean vectors if every candidate has
        one, texts and scalars."""
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
            num_tokens=[c.num_tokens for c in cands],
            cumulative_logprobs=[c.cumulative_logprob for c in cands],
            mean_entropies=[c.mean_entropy for c in cands],
            finish_reasons=[c.finish_reason for c in cands],
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
                f"SELECT {_SHOWN_COLS} FROM shown WHERE user_id = ? AND set_id = ?",
                (user, set_id),
            ).fetchone()
        if row is None:
            raise UnknownCandidateSetError(user, set_id)
        return self._decode_shown(row)

    def _select_events(
        self, where: str, params: Sequence[object], limit: int | None = None
    ) -> list[FeedbackEvent]:
        sql = (
            "SELECT f.event_id, f.kind, f.candidate, f.value, f.rejected, f.created, "
            f"f.signals_version, {_SHOWN_COLS_S} "
            "FROM feedback f JOIN shown s ON s.row_id = f.shown_id "
            f"WHERE {where} ORDER BY f.event_id"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"

        with self._query() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [self._decode_event(r) for r in rows]

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

    # -- decoding --------------------------------------------------------------------
    def _decode_shown(self, row: Sequence[Any]) -> ShownSet:
        """A ``shown`` row (``_SHOWN_FIELDS`` order; columns are SQLite values) as a set."""
        user, set_id, task, created, dtype, d, k, inst_b, cand_b, texts = row[:10]
        mean_b, scalars, signals_b, signals_version = row[10:14]
        try:
            dt = np.dtype(str(dtype))
            inst = np.frombuffer(inst_b, dtype=dt).reshape(int(d))
            cand = np.frombuffer(cand_b, dtype=dt).reshape(int(k), int(d))
            mean = None
            if mean_b is not None:
                mean = np.frombuffer(mean_b, dtype=dt).reshape(int(k), int(d))
            signals = None
            if signals_b is not None:
                signals = np.frombuffer(signals_b, dtype=np.float32).reshape(int(k), -1)
            text_list = tuple(json.loads(texts)) if texts is not None else None
            per_candidate = _decode_scalars(scalars)
        except (ValueError, TypeError, KeyError) as exc:
            raise CorruptStoreError(
                self.path, f"set {set_id!r} has damaged features: {exc}"
            ) from exc
        return ShownSet(
            str(user),
            str(set_id),
            str(task),
            inst,
            cand,
            text_list,
            float(created),
            mean,
            *per_candidate,
            signals=signals,
            signals_version=None if signals_version is None else int(signals_version),
        )

    def _decode_event(self, row: Sequence[Any]) -> FeedbackEvent:
        event_id, kind, candidate, value, rejected, created, signals_version = row[:7]
        shown = self._decode_shown(row[7:])
        return FeedbackEvent(
            event_id=int(event_id),
            kind=kind,
            candidate=int(candidate),
            value=None if value is None else float(value),
            rejected=tuple(json.loads(rejected)) if rejected else (),
            created=float(created),
            shown=shown,
            signals_version=None if signals_version is None else int(signals_version),
        )


_SHOWN_FIELDS = (
    "user_id",
    "set_id",
    "task",
    "created",
    "dtype",
    "feature_size",
    "k",
    "instruction",
    "candidates",
    "texts",
    "mean_candidates",
    "scalars",
    "signals",
    "signals_version",
)
_SHOWN_COLS = ", ".join(_SHOWN_FIELDS)
_SHOWN_COLS_S = ", ".join(f"s.{c}" for c in _SHOWN_FIELDS)
_LAST_ONLY: tuple[Part, ...] = ("last",)  # events_to_dataset's default parts
_SCALAR_KEYS = ("num_tokens", "cumulative_logprob", "mean_entropy", "finish_reason")


def _scalars_json(
    num_tokens: Sequence[int] | None,
    cumulative_logprobs: Sequence[float] | None,
    mean_entropies: Sequence[float | None] | None,
    finish_reasons: Sequence[str] | None,
) -> str | None:
    """The per-candidate scalars as one JSON object of lists (None when none given)."""
    columns: dict[str, list[Any] | None] = {
        "num_tokens": None if num_tokens is None else [int(n) for n in num_tokens],
        "cumulative_logprob": None
        if cumulative_logprobs is None
        else [float(c) for c in cumulative_logprobs],
        "mean_entropy": None
        if mean_entropies is None
        else [None if e is None or not np.isfinite(e) else float(e) for e in mean_entropies],
        "finish_reason": None if finish_reasons is None else [str(f) for f in finish_reasons],
    }
    given = {key: value for key, value in columns.items() if value is not None}
    return json.dumps(given) if given else None


def _decode_scalars(
    text: str | None,
) -> tuple[
    tuple[int, ...] | None,
    tuple[float, ...] | None,
    tuple[float | None, ...] | None,
    tuple[str, ...] | None,
]:
    """``_scalars_json``'s output back as ShownSet's four per-candidate tuples."""
    data = json.loads(text) if text is not None else {}
    if not isinstance(data, dict):
        raise ValueError(f"scalars are not a JSON object: {text!r}")
    num, cum, ent, fin = (data.get(key) for key in _SCALAR_KEYS)
    return (
        None if num is None else tuple(int(n) for n in num),
        None if cum is None else tuple(float(c) for c in cum),
        None if ent is None else tuple(None if e is None else float(e) for e in ent),
        None if fin is None else tuple(str(f) for f in fin),
    )


def events_to_dataset(
    events: Iterable[FeedbackEvent],
    *,
    unlabelled: Literal["ignore", "negative"] = "ignore",
    parts: Collection[Part] = _LAST_ONLY,
) -> GroupDataset:
    """Turn feedback events into training data for ``edge.training.loop``.

    Per shown set (the latest event wins for a candidate rated twice):
    - thumbs -> one binary group of the thumbed candidates (label 1 up, 0 down);
      with ``unlabelled="negative"`` every other shown candidate joins as a 0;
    - scores -> one graded group of the scored candidates (MSE);
    - picks  -> one preference pair per rejected candidate (Bradley-Terry).
    Duplicate events (the same event id twice, e.g. new + replayed) count once.

    ``parts`` adds the candidates' mean vectors ("mean", for the sets that have
    them) and signals ("signals", of the current SIGNALS_VERSION, recomputed for
    sets stored under another) to the last-token vectors every example carries.
    """
    by_set: dict[tuple[str, str], list[FeedbackEvent]] = {}
    seen: set[int] = set()
    for ev in sorted(events, key=lambda e: e.event_id):
        if ev.event_id in seen:
            continue
        seen.add(ev.event_id)
        by_set.setdefault((ev.user, ev.set_id), []).append(ev)
    groups: list[Group] = []
    pairs: list[Pair] = []
    for evs in by_set.values():
        shown = evs[0].shown
        mean = shown.mean_candidates if "mean" in parts else None
        signals = shown.signal_block() if "signals" in parts else None
        thumbs = {e.candidate: float(e.value or 0.0) for e in evs if e.kind == "thumb"}
        scores = {e.candidate: float(e.value or 0.0) for e in evs if e.kind == "score"}
        if thumbs:
            if unlabelled == "negative":
                thumbs = {i: thumbs.get(i, 0.0) for i in range(shown.k)}
            groups.append(_group(shown, thumbs, mean, signals))
        if scores:
            groups.append(_group(shown, scores, mean, signals))
        for e in evs:
            if e.kind == "pick":
                pairs += [_pair(shown, e.candidate, r, mean, signals) for r in e.rejected]
    return GroupDataset.from_groups(groups, pairs)


def _group(
    shown: ShownSet,
    labels: dict[int, float],
    mean: np.ndarray | None,
    signals: np.ndarray | None,
) -> Group:
    idx = sorted(labels)
    return Group(
        shown.instruction,
        shown.candidates[idx],
        np.array([labels[i] for i in idx], dtype=np.float32),
        None if mean is None else mean[idx],
        None if signals is None else signals[idx],
    )


def _pair(
    shown: ShownSet, chosen: int, rejected: int, mean: np.ndarray | None, signals: np.ndarray | None
) -> Pair:
    return Pair(
        shown.instruction,
        shown.candidates[chosen],
        shown.candidates[rejected],
        None if mean is None else mean[chosen],
        None if mean is None else mean[rejected],
        None if signals is None else signals[chosen],
        None if signals is None else signals[rejected],
    )
