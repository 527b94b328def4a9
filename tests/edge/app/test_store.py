from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edge import (
    CorruptStoreError,
    FeatureError,
    StoreError,
    UnknownCandidateSetError,
    UnknownUserError,
)
from edge.app.store import FeedbackStore
from edge.app.training_data import events_to_dataset

D = 16
REPO = Path(__file__).resolve().parents[3]


def _features(k: int = 4, seed: int = 0, dtype: type = np.float32) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal(D).astype(dtype),
        rng.standard_normal((k, D)).astype(dtype),
    )


@pytest.fixture
def store(tmp_path: Path) -> FeedbackStore:
    with FeedbackStore(tmp_path / "feedback.db") as s:
        yield s


def test_record_and_read_back_features_exactly(store: FeedbackStore) -> None:
    inst, cand = _features()
    store.record_shown("alice", "s1", inst, cand, texts=["a", "b", "c", "d"], task="chat")
    shown = store.shown("alice", "s1")
    np.testing.assert_array_equal(shown.instruction, inst)
    np.testing.assert_array_equal(shown.candidates, cand)
    assert shown.texts == ("a", "b", "c", "d") and shown.task == "chat"
    inst16, cand16 = _features(3, dtype=np.float16)
    store.record_shown("alice", "s2", inst16, cand16)
    assert store.shown("alice", "s2").candidates.dtype == np.float16
    np.testing.assert_array_equal(store.shown("alice", "s2").candidates, cand16)


def test_feedback_kinds_and_cursor(store: FeedbackStore) -> None:
    store.record_shown("u", "s1", *_features())
    e1 = store.thumbs("u", "s1", 2, up=True)
    e2 = store.pick("u", "s1", 0, [1, 3])
    e3 = store.score("u", "s1", 1, 4.5)
    assert e1 < e2 < e3 == store.last_cursor("u")
    events = store.events("u")
    assert [e.kind for e in events] == ["thumb", "pick", "score"]
    assert events[0].value == 1.0 and events[1].rejected == (1, 3) and events[2].value == 4.5
    assert [e.event_id for e in store.events("u", since=e1)] == [e2, e3]
    assert store.events("u", since=e3) == []
    assert len(store.events("u", limit=2)) == 2
    default_pick = store.pick("u", "s1", 3)
    assert store.events("u", since=e3)[0].rejected == (0, 1, 2)
    assert default_pick > e3


def test_users_are_isolated(store: FeedbackStore) -> None:
    store.record_shown("alice", "shared-id", *_features(seed=1))
    store.record_shown("bob", "shared-id", *_features(seed=2))
    store.thumbs("alice", "shared-id", 0, up=True)
    store.thumbs("bob", "shared-id", 1, up=False)
    alice = store.events("alice")
    assert len(alice) == 1 and alice[0].user == "alice" and alice[0].candidate == 0
    np.testing.assert_array_equal(alice[0].shown.instruction, _features(seed=1)[0])
    assert all(e.user == "bob" for e in store.events("bob"))
    assert all(e.user == "alice" for e in store.sample_events("alice", 10))
    store.record_shown("carol", "only-carol", *_features())
    with pytest.raises(UnknownCandidateSetError):
        store.thumbs("alice", "only-carol", 0, up=True)
    assert store.users() == ["alice", "bob", "carol"]


def test_bad_input_raises_specific_errors_and_keeps_data(store: FeedbackStore) -> None:
    inst, cand = _features()
    store.record_shown("u", "s1", inst, cand)
    store.thumbs("u", "s1", 0, up=True)
    with pytest.raises(UnknownCandidateSetError, match="'never-shown'"):
        store.thumbs("u", "never-shown", 0, up=True)
    with pytest.raises(UnknownUserError, match="'ghost'"):
        store.events("ghost")
    with pytest.raises(FeatureError, match="feature has 8 values, ranker expects 16"):
        store.record_shown("u", "s2", inst, cand[:, :8])
    with pytest.raises(FeatureError, match="dtype int32"):
        store.record_shown("u", "s3", inst.astype(np.int32), cand)
    nan = cand.copy()
    nan[1, 1] = np.nan
    with pytest.raises(FeatureError, match="nan"):
        store.record_shown("u", "s4", inst, nan)
    with pytest.raises(StoreError, match="already recorded"):
        store.record_shown("u", "s1", inst, cand)
    with pytest.raises(StoreError, match="out of range"):
        store.thumbs("u", "s1", 9, up=True)
    with pytest.raises(StoreError, match="finite"):
        store.score("u", "s1", 0, float("inf"))
    # Nothing stored before was lost, and no half-written rows were left behind.
    events = store.events("u")
    assert [(e.kind, e.candidate) for e in events] == [("thumb", 0)]
    np.testing.assert_array_equal(store.shown("u", "s1").candidates, cand)
    with pytest.raises(UnknownCandidateSetError):
        store.shown("u", "s2")


_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from edge.app.store import FeedbackStore

    store = FeedbackStore(sys.argv[1])
    rng = np.random.default_rng(0)
    store.record_shown("u", "s1", rng.standard_normal(16), rng.standard_normal((3, 16)))
    store.thumbs("u", "s1", 1, up=True)
    store.pick("u", "s1", 1, [2])
    import os
    os._exit(0)  # no close(): the events must already be durable
    """
)


def test_feedback_survives_process_restart(tmp_path: Path) -> None:
    path = tmp_path / "fb.db"
    proc = subprocess.run(
        [sys.executable, "-c", _WRITER, str(path)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    with FeedbackStore(path) as store:
        events = store.events("u")
        assert [e.kind for e in events] == ["thumb", "pick"]
        rng = np.random.default_rng(0)
        expected_inst = rng.standard_normal(16).astype(np.float32)
        np.testing.assert_array_equal(events[0].shown.instruction, expected_inst)


def _filled(path: Path, sets: int = 60) -> None:
    with FeedbackStore(path) as store:
        for i in range(sets):
            store.record_shown("u", f"s{i}", *_features(k=8, seed=i))
            store.thumbs("u", f"s{i}", i % 8, up=True)


def test_truncated_database_raises_corrupt_store_error(tmp_path: Path) -> None:
    path = tmp_path / "fb.db"
    _filled(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CorruptStoreError, match=r"fb\.db"):
        store = FeedbackStore(path)
        store.events("u")
    assert path.stat().st_size == len(data) // 3  # the damaged file is left for recovery


def test_garbage_database_raises_corrupt_store_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 300)
    with pytest.raises(CorruptStoreError, match=r"junk\.db"):
        FeedbackStore(path)
    assert path.read_bytes() == b"this is not sqlite" * 300


def test_damaged_feature_blob_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "fb.db"
    _filled(path, sets=2)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE shown SET candidates = x'0102' WHERE set_id = 's1'")
    with FeedbackStore(path) as store:
        with pytest.raises(CorruptStoreError, match="'s1' has damaged features"):
            store.events("u")
        np.testing.assert_array_equal(store.shown("u", "s0").candidates, _features(8, 0)[1])


def test_events_to_dataset(store: FeedbackStore) -> None:
    store.record_shown("u", "thumbs", *_features(k=4, seed=1))
    store.thumbs("u", "thumbs", 0, up=True)
    store.thumbs("u", "thumbs", 2, up=False)
    store.thumbs("u", "thumbs", 2, up=True)  # latest wins
    store.record_shown("u", "picked", *_features(k=3, seed=2))
    store.pick("u", "picked", 1)
    store.record_shown("u", "rated", *_features(k=3, seed=3))
    store.score("u", "rated", 0, 2.5)
    store.score("u", "rated", 2, 4.0)
    events = store.events("u")
    data = events_to_dataset(events + events[:2])  # duplicates (replay overlap) count once
    kinds = {b.kind: b for b in data.blocks}
    assert set(kinds) == {"binary", "graded", "pair"}
    np.testing.assert_array_equal(kinds["binary"].labels, [[1.0, 1.0]])
    np.testing.assert_array_equal(kinds["graded"].labels, [[2.5, 4.0]])
    assert len(kinds["pair"]) == 2
    shown = store.shown("u", "picked")
    np.testing.assert_array_equal(kinds["pair"].candidates[0, 0], shown.candidates[1])
    full = events_to_dataset(events, unlabelled="negative")
    binary = next(b for b in full.blocks if b.kind == "binary")
    np.testing.assert_array_equal(binary.labels, [[1.0, 0.0, 1.0, 0.0]])


# -- representation v2: mean vectors, scalars, signals, and the schema-1 migration ----
_SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE shown (
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
    UNIQUE (user_id, set_id)
);
CREATE TABLE feedback (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    shown_id INTEGER NOT NULL REFERENCES shown (row_id),
    kind TEXT NOT NULL CHECK (kind IN ('thumb', 'pick', 'score')),
    candidate INTEGER NOT NULL,
    value REAL,
    rejected TEXT,
    created REAL NOT NULL
);
CREATE INDEX feedback_by_user ON feedback (user_id, event_id);
INSERT INTO meta (key, value) VALUES ('schema_version', '1');
"""


def _schema_1_store(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A store exactly as the first release wrote it: one set with texts, two events."""
    inst, cand = _features(k=3, seed=5)
    with sqlite3.connect(path) as conn:
        conn.executescript(_SCHEMA_1)
        conn.execute(
            "INSERT INTO shown (user_id, set_id, task, created, dtype, feature_size, k,"
            " instruction, candidates, texts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("u", "old", "chat", 1.0, "float32", D, 3, inst.tobytes(), cand.tobytes(),
             '["- a\\n- b", "Plain.", "Yes!"]'),
        )  # fmt: skip
        conn.execute(
            "INSERT INTO feedback (user_id, shown_id, kind, candidate, value, rejected, created)"
            " VALUES ('u', 1, 'thumb', 0, 1.0, NULL, 2.0), ('u', 1, 'pick', 2, NULL, '[1]', 3.0)"
        )
    return inst, cand


def test_a_schema_1_store_migrates_in_place_and_its_events_stay_usable(tmp_path: Path) -> None:
    from edge.runtime.signals import SIGNALS_VERSION, text_signals

    path = tmp_path / "old.db"
    inst, cand = _schema_1_store(path)
    with FeedbackStore(path) as store:
        assert store.schema_version == 3
        old = store.events("u")
        assert [(e.kind, e.candidate, e.rejected) for e in old] == [
            ("thumb", 0, ()),
            ("pick", 2, (1,)),
        ]
        shown = old[0].shown
        np.testing.assert_array_equal(shown.candidates, cand)
        np.testing.assert_array_equal(shown.instruction, inst)
        assert shown.mean_candidates is None and not shown.scalars.known
        assert shown.signals is None and old[0].signals_version is None
        # Signals are recomputed from the stored texts (scalars unknown: 0).
        np.testing.assert_array_equal(
            shown.signal_block(), text_signals(["- a\n- b", "Plain.", "Yes!"])
        )
        # New events on the migrated store record the current signals version.
        store.thumbs("u", "old", 1, up=False)
        assert store.events("u", since=old[-1].event_id)[0].signals_version == SIGNALS_VERSION
    with sqlite3.connect(path) as conn:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(shown)")}
        assert {"mean_candidates", "scalars", "signals", "signals_version"} <= columns
    with FeedbackStore(path) as again:  # opening a migrated store changes nothing
        assert again.schema_version == 3 and len(again.events("u")) == 3


def _schema_2_store(path: Path) -> None:
    """A store as schema 2 wrote it: the schema-1 tables plus its columns, one set with
    texts and one recorded without, an event on each."""
    _schema_1_store(path)
    inst, cand = _features(k=3, seed=6)
    with sqlite3.connect(path) as conn:
        for table, column, kind in (
            ("shown", "mean_candidates", "BLOB"), ("shown", "scalars", "TEXT"),
            ("shown", "signals", "BLOB"), ("shown", "signals_version", "INTEGER"),
            ("feedback", "signals_version", "INTEGER"),
        ):  # fmt: skip
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        conn.execute(
            "INSERT INTO shown (user_id, set_id, task, created, dtype, feature_size, k,"
            " instruction, candidates) VALUES ('u', 'no-texts', 'chat', 4.0, 'float32', ?, 3,"
            " ?, ?)",
            (D, inst.tobytes(), cand.tobytes()),
        )
        conn.execute(
            "INSERT INTO feedback (user_id, shown_id, kind, candidate, value, rejected, created)"
            " VALUES ('u', 2, 'thumb', 1, 1.0, NULL, 5.0)"
        )
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")


def test_a_schema_2_store_migrates_and_old_sets_say_explicitly_whether_they_have_a_lexicon(
    tmp_path: Path,
) -> None:
    """Schema 3 adds the lexicon block; an old set's lexicon is recomputed from its texts,
    and a set recorded without texts has none (None, never zeros passed off as counts)."""
    from edge.runtime.lexicon import LEXICON_VERSION, LEXICON_WIDTH, lexicon_block

    path = tmp_path / "v2.db"
    _schema_2_store(path)
    with FeedbackStore(path) as store:
        assert store.schema_version == 3
        with_texts, without = (e.shown for e in store.events("u")[1:])
        assert with_texts.lexicon is None and with_texts.lexicon_version is None
        np.testing.assert_array_equal(
            with_texts.lexicon_block(), lexicon_block(["- a\n- b", "Plain.", "Yes!"])
        )
        assert without.texts is None and without.lexicon_block() is None
        # A set recorded now keeps its lexicon, of the current version, and reads it back.
        texts = ["You should budget your money.", "Rest.", "I think it may rain in Paris."]
        inst, cand = _features(k=3, seed=7)
        store.record_shown("u", "new", inst, cand, texts=texts, task="chat")
        store.thumbs("u", "new", 0, up=True)
        new = store.shown("u", "new")
        assert new.lexicon is not None and new.lexicon_version == LEXICON_VERSION
        assert new.lexicon.shape == (3, LEXICON_WIDTH)
        np.testing.assert_array_equal(new.lexicon_block(), lexicon_block(texts))
        # Stored under another version: recomputed from the texts, not read as is.
        stale = dataclasses.replace(new, lexicon=new.lexicon + 1, lexicon_version=0)
        np.testing.assert_array_equal(stale.lexicon_block(), lexicon_block(texts))
        with pytest.raises(StoreError, match="lexicon has shape"):
            store.record_shown("u", "bad", inst, cand, texts=texts, lexicon=np.zeros((3, 5)))
    with sqlite3.connect(path) as conn:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(shown)")}
        assert {"lexicon", "lexicon_version"} <= columns


def test_a_store_from_a_newer_release_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    _schema_1_store(path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    before = path.read_bytes()
    with pytest.raises(StoreError, match=r"schema version 99.*newer release"):
        FeedbackStore(path)
    assert path.read_bytes() == before


def test_a_generation_is_stored_with_mean_vectors_scalars_and_signals(
    store: FeedbackStore,
) -> None:
    from edge.runtime.scalars import Scalars
    from edge.runtime.signals import SIGNALS_VERSION, candidate_signals
    from edge.runtime.types import Candidate, Generation

    inst, cand = _features(k=2, seed=3)
    mean = cand[::-1].copy()
    cands = (
        Candidate(0, "- one\n- two", (5, 6, 7), "eos", -1.5, cand[0], mean_feature=mean[0],
                  mean_entropy=0.7),
        Candidate(1, "A long answer!", (5,), "length", -0.25, cand[1], mean_feature=mean[1]),
    )  # fmt: skip
    store.record_generation("u", "g", Generation("p", inst, cands), task="chat")
    store.thumbs("u", "g", 0, up=True)
    (event,) = store.events("u")
    assert event.signals_version == SIGNALS_VERSION
    shown = event.shown
    np.testing.assert_array_equal(shown.mean_candidates, mean)
    assert shown.scalars == Scalars((3, 1), (-1.5, -0.25), (0.7, None), ("eos", "length"))
    assert shown.texts == ("- one\n- two", "A long answer!")
    assert shown.signals_version == SIGNALS_VERSION
    np.testing.assert_array_equal(shown.signals, candidate_signals(cands))
    np.testing.assert_array_equal(shown.signal_block(), candidate_signals(cands))
    # Without mean vectors on every candidate, none are stored.
    partial = (cands[0], Candidate(1, "x", (), "eos", 0.0, cand[1]))
    assert store.record_generation("u", "h", Generation("p", inst, partial)).mean_candidates is None
    with pytest.raises(StoreError, match="got 1 num_tokens values for 2 candidates"):
        store.record_shown("u", "bad", inst, cand[:2], scalars=Scalars(num_tokens=[1]))
    with pytest.raises(FeatureError, match="mean candidate features"):
        store.record_shown("u", "bad", inst, cand[:2], mean_candidates=cand[:2, :5])


def test_events_to_dataset_carries_mean_vectors_and_signals_when_asked(
    store: FeedbackStore,
) -> None:
    from edge.runtime.signals import SIGNAL_NAMES

    inst, cand = _features(k=3, seed=8)
    mean = cand[::-1].copy()
    texts = ["- a", "b!", "c?"]
    store.record_shown("u", "v2", inst, cand, texts=texts, mean_candidates=mean)
    store.thumbs("u", "v2", 0, up=True)
    store.thumbs("u", "v2", 2, up=False)
    store.pick("u", "v2", 1, [2])
    store.record_shown("u", "v1", inst, cand)  # no mean vectors: signals only
    store.thumbs("u", "v1", 1, up=True)
    events = store.events("u")
    plain = events_to_dataset(events)
    assert all(b.mean_candidates is None and b.signals is None for b in plain.blocks)
    full = events_to_dataset(events, parts=("last", "mean", "signals"))
    shown = store.shown("u", "v2")
    binary = [b for b in full.blocks if b.kind == "binary"]
    with_mean = next(b for b in binary if b.mean_candidates is not None)
    np.testing.assert_array_equal(with_mean.mean_candidates[0], mean[[0, 2]])
    np.testing.assert_array_equal(with_mean.signals[0], shown.signal_block()[[0, 2]])
    assert any(b.mean_candidates is None and b.signals is not None for b in binary)
    pair = next(b for b in full.blocks if b.kind == "pair")
    np.testing.assert_array_equal(pair.mean_candidates[0], mean[[1, 2]])
    assert pair.signals.shape == (1, 2, len(SIGNAL_NAMES))


_FILL_THE_STORE = """
import sys
import numpy as np
from edge import DiskFullError, FeedbackStore

path = sys.argv[1] + "/feedback.sqlite3"
store = FeedbackStore(path)
rng = np.random.default_rng(0)
acknowledged = 0
try:
    for i in range(100_000):
        cands = rng.standard_normal((8, 64)).astype(np.float32)
        store.record_shown("u", f"s{i}", rng.standard_normal(64), cands)
        store.thumbs("u", f"s{i}", 0, up=True)
        acknowledged += 1
except DiskFullError as error:
    print("FULL", error)
try:
    store.thumbs("u", "s0", 1, up=False)  # still full: refused, named, nothing half-done
except DiskFullError:
    print("STILL FULL")
assert len(store.events("u")) == acknowledged  # every acknowledged event is there
store.close()
reopened = FeedbackStore(path)  # and the file is intact
assert len(reopened.events("u")) == acknowledged > 0
print("OK", acknowledged)
"""


def test_a_full_disk_is_named_as_such_and_loses_no_acknowledged_event() -> None:
    from tests.edge.app._full_disk import run_on_small_disk

    proc = run_on_small_disk(_FILL_THE_STORE, size_kb=600)
    assert proc.returncode == 0, proc.stderr
    assert "FULL no space left to write" in proc.stdout and "feedback.sqlite3" in proc.stdout
    assert "STILL FULL" in proc.stdout and "OK" in proc.stdout
    assert "corrupt" not in proc.stdout + proc.stderr


def test_sets_are_listed_newest_first_and_found_by_any_unique_start(tmp_path: Path) -> None:
    from edge import UnknownCandidateSetError

    with FeedbackStore(tmp_path / "fb.db") as store:
        inst, cands = np.zeros(8, np.float32), np.ones((3, 8), np.float32)
        for set_id, task in (("ab12", "chat"), ("ab34", "chat"), ("cd56", "math")):
            store.record_shown("u", set_id, inst, cands, task=task)
        assert [s.set_id for s in store.recent_sets("u")] == ["cd56", "ab34", "ab12"]
        assert [s.set_id for s in store.recent_sets("u", task="chat", limit=1)] == ["ab34"]
        assert store.find_set("u", "ab3").set_id == "ab34"
        assert store.find_set("u", "cd56", task="math").set_id == "cd56"
        with pytest.raises(StoreError, match="'ab' starts more than one set"):
            store.find_set("u", "ab")
        with pytest.raises(UnknownCandidateSetError):
            store.find_set("u", "cd", task="chat")
        assert store.recent_sets("nobody") == []
