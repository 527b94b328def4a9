"""What a process keeps between a taste learner's updates: each recent user's rows and
the global rankers they were scored by (``edge.app.taste.learner`` uses both).

A steady-state update then reads only the new events; a fresh process rebuilds a
user's rows once from the store.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from edge.app.lineage import EventRanges
from edge.app.registry import VersionInfo
from edge.app.taste.fit import TasteFit
from edge.app.taste.pairs import Reaction
from edge.runtime.scoring import RankingSession

__all__ = [
    "GLOBALS",
    "ROWS",
    "ROWS_CAPACITY",
    "GlobalRanker",
    "GlobalsCache",
    "RowsCache",
    "UserRows",
    "global_key",
]

ROWS_CAPACITY = 8  # users whose rows a process keeps between updates


@dataclass
class GlobalRanker:
    """The global ranker of a name as the learner uses it: bytes, a session, and the
    basis its weights archive ships for the wide parts (empty without one)."""

    info: VersionInfo
    model: bytes = field(repr=False)
    session: RankingSession = field(repr=False)
    basis: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def key(self) -> str:
        return global_key(self.info)


def global_key(info: VersionInfo) -> str:
    """What a user's rows depend on in a global version: its model (the offsets)
    and its weights archive (the basis it ships)."""
    return f"{info.model_sha256}/{info.weights_sha256}"


@dataclass
class UserRows:
    """What a process keeps per (store, user, ranker) between updates."""

    fit: TasteFit
    cursor: int = 0  # newest event id in the fit
    event_ids: list[int] = field(default_factory=list)  # every event in the fit, ascending
    reactions: dict[str, list[Reaction]] = field(default_factory=dict)  # per set id
    weights_sha256: str | None = None  # the saved head the fit's v equals (None: unsaved)
    global_key: str | None = None  # the global ranker the offsets and basis came from
    forgotten: EventRanges = ()  # the events a rollback forgot, left out of the fit


class RowsCache:
    """Recently used users' rows, least recently used dropped first."""

    def __init__(self, capacity: int) -> None:
        self._entries: OrderedDict[tuple[str, str, str], UserRows] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def take(self, key: tuple[str, str, str]) -> UserRows | None:
        """Remove and return the entry: an update that fails half-way leaves none."""
        with self._lock:
            return self._entries.pop(key, None)

    def held(self) -> list[UserRows]:
        """Every user's rows held now, least recently used first."""
        with self._lock:
            return list(self._entries.values())

    def clear(self) -> None:
        """Forget every user's rows (the next update of each rebuilds them)."""
        with self._lock:
            self._entries.clear()

    def put(self, key: tuple[str, str, str], rows: UserRows) -> None:
        with self._lock:
            self._entries[key] = rows
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)


ROWS = RowsCache(ROWS_CAPACITY)


class GlobalsCache:
    """Loaded global rankers by the sha256 of their (verified) ONNX and weights bytes."""

    def __init__(self, capacity: int = 4) -> None:
        self._entries: OrderedDict[str, GlobalRanker] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def get(self, key: str) -> GlobalRanker | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, glob: GlobalRanker) -> GlobalRanker:
        with self._lock:
            self._entries[glob.key] = glob
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        return glob


GLOBALS = GlobalsCache()
