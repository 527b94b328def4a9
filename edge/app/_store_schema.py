"""The feedback store's SQLite schema, its migration, and how its rows read back.

Schema versions: 1 (the first release: vectors and texts), 2 (adds the mean
vectors, scalars and signals) and 3 (adds the lexicon block and its version).
Opening an older store migrates it in place, in one transaction; its old sets
read with what they lack as None (``mean_candidates`` None and the scalars
unknown before 2; ``lexicon`` None before 3, which ``ShownSet.lexicon_block``
recomputes from the stored texts). A store written by a newer release is refused before anything
is written to it. Private to ``edge.app.store``, whose docstring says what a
store keeps and how durably.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge._errors import CorruptStoreError, DiskFullError, RankerError, StoreError
from edge.app.records import FeedbackEvent, ShownSet
from edge.runtime.scalars import Scalars

__all__ = [
    "SCHEMA_VERSION",
    "SHOWN_COLUMNS",
    "SHOWN_COLUMNS_S",
    "SHOWN_FIELDS",
    "connect",
    "decode_event",
    "decode_shown",
    "is_corruption",
    "sqlite_failure",
]

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
    lexicon BLOB,
    lexicon_version INTEGER,
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
SCHEMA_VERSION = 3
# Columns each schema version added, applied in order to migrate an older store.
_ADDED_COLUMNS: dict[int, list[tuple[str, str, str]]] = {
    2: [
        ("shown", "mean_candidates", "BLOB"),
        ("shown", "scalars", "TEXT"),
        ("shown", "signals", "BLOB"),
        ("shown", "signals_version", "INTEGER"),
        ("feedback", "signals_version", "INTEGER"),
    ],
    3: [
        ("shown", "lexicon", "BLOB"),
        ("shown", "lexicon_version", "INTEGER"),
    ],
}
_CORRUPTION_HINTS = ("malformed", "not a database", "encrypted", "disk image", "corrupt")


def is_corruption(exc: sqlite3.DatabaseError) -> bool:
    if isinstance(exc, sqlite3.IntegrityError) or _is_full(exc):
        return False
    text = str(exc).lower()
    return type(exc) is sqlite3.DatabaseError or any(h in text for h in _CORRUPTION_HINTS)


def _is_full(exc: sqlite3.DatabaseError) -> bool:
    """SQLITE_FULL: the disk (or a quota) is full; the statement was rolled back."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF == sqlite3.SQLITE_FULL
    return "database or disk is full" in str(exc)


def sqlite_failure(exc: sqlite3.DatabaseError, path: Path) -> RankerError | None:
    """What a SQLite error means to the caller: a full disk (DiskFullError), a
    damaged file (CorruptStoreError), or None for anything else."""
    if _is_full(exc):
        return DiskFullError(path, str(exc))
    if is_corruption(exc):
        return CorruptStoreError(path, str(exc))
    return None


def _write_ahead(conn: sqlite3.Connection, timeout: float) -> None:
    """Puts the file in WAL mode, waiting up to `timeout` for another opener.

    Two processes opening a new store at once both ask to switch its journal;
    SQLite answers one of them "database is locked" at once, without waiting
    (waiting could deadlock the two upgrades). The mode is kept in the file,
    so once the other opener has switched it, asking again succeeds.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def connect(path: Path, timeout: float) -> sqlite3.Connection:
    """Connect, check integrity *before* writing anything, then ensure the schema."""
    if path.is_dir():
        raise CorruptStoreError(path, "is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        status = conn.execute("PRAGMA quick_check").fetchone()[0]
        if status != "ok":
            raise CorruptStoreError(path, f"integrity check says {status!r}")
        _refuse_newer(conn, path)
        _write_ahead(conn, timeout)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(_SCHEMA)
        _migrate(conn, path)
    except sqlite3.DatabaseError as exc:
        conn.close()
        failure = sqlite_failure(exc, path)
        raise failure or StoreError(f"cannot open feedback store {path}: {exc}") from exc
    except StoreError:
        conn.close()
        raise
    return conn


def _refuse_newer(conn: sqlite3.Connection, path: Path) -> None:
    """Raise StoreError, before anything is written, for a newer release's store."""
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if not has_meta:
        return
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    found = int(row[0]) if row is not None and str(row[0]).isdigit() else 0
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"feedback store {path} has schema version {found}, written by a "
            f"newer release; this release reads up to version {SCHEMA_VERSION}"
        )


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring an older schema up to SCHEMA_VERSION in one transaction.

    Columns are added where the table lacks them rather than trusting the
    recorded version alone, so a store whose first open was cut short between
    creating the tables and recording the version also ends up complete.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        _refuse_newer(conn, path)
        for version in sorted(_ADDED_COLUMNS):
            for table, column, kind in _ADDED_COLUMNS[version]:
                have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
    except BaseException:
        if conn.in_transaction:  # SQLite may have rolled back already (a full disk)
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def decode_shown(row: Sequence[Any], path: Path) -> ShownSet:
    """A ``shown`` row (``SHOWN_FIELDS`` order; columns are SQLite values) as a set."""
    user, set_id, task, created, dtype, d, k, inst_b, cand_b, texts = row[:10]
    mean_b, scalars, signals_b, signals_version, lexicon_b, lexicon_version = row[10:16]
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
        lexicon = None
        if lexicon_b is not None:
            lexicon = np.frombuffer(lexicon_b, dtype=np.float32).reshape(int(k), -1)
        text_list = tuple(json.loads(texts)) if texts is not None else None
        per_candidate = Scalars.from_json(scalars)
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptStoreError(path, f"set {set_id!r} has damaged features: {exc}") from exc
    return ShownSet(
        str(user),
        str(set_id),
        str(task),
        inst,
        cand,
        text_list,
        float(created),
        mean,
        per_candidate,
        signals=signals,
        signals_version=None if signals_version is None else int(signals_version),
        lexicon=lexicon,
        lexicon_version=None if lexicon_version is None else int(lexicon_version),
    )


def decode_event(row: Sequence[Any], path: Path) -> FeedbackEvent:
    event_id, kind, candidate, value, rejected, created, signals_version = row[:7]
    shown = decode_shown(row[7:], path)
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


SHOWN_FIELDS = (
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
    "lexicon",
    "lexicon_version",
)
SHOWN_COLUMNS = ", ".join(SHOWN_FIELDS)
SHOWN_COLUMNS_S = ", ".join(f"s.{c}" for c in SHOWN_FIELDS)
