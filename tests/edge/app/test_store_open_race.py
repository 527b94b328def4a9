"""Several processes opening one new feedback store at the same moment."""

from __future__ import annotations

import multiprocessing as mp
import time
from multiprocessing.queues import Queue
from pathlib import Path

import pytest

from edge.app.store import FeedbackStore


def _open_at(path: str, start: float, results: Queue) -> None:
    while time.time() < start:  # every process asks at the same instant
        pass
    try:
        FeedbackStore(Path(path)).close()
        results.put("")
    except Exception as exc:  # reported to the test, not lost in the child
        results.put(repr(exc))


@pytest.mark.slow  # forks ~60 processes; CI runs it
def test_processes_opening_a_new_store_at_once_all_open_it(tmp_path: Path) -> None:
    # Both openers of a new file ask SQLite to switch its journal to WAL; one of them
    # was answered "database is locked" at once (no busy wait): 2 of 15 rounds here.
    context = mp.get_context("fork")
    failures = []
    for round_ in range(15):
        path = tmp_path / f"round{round_}" / "feedback.sqlite3"
        results = context.Queue()
        start = time.time() + 0.3
        procs = [
            context.Process(target=_open_at, args=(str(path), start, results)) for _ in range(6)
        ]
        for proc in procs:
            proc.start()
        failures += [error for error in (results.get(timeout=60) for _ in procs) if error]
        for proc in procs:
            proc.join(timeout=60)
    assert failures == []
