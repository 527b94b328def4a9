"""What a process keeps between a taste learner's updates: each recent user's rows and
the global rankers they were scored by (``edge.app.taste.learner`` uses both).

A steady-state update then reads only the new events; a fresh process rebuilds a
user's rows once from the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge._cache import BoundedCache
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


# Users' rows by (store, user, ranker). The learner takes a user's rows out for an
# update and puts them back after: an update that fails half-way leaves none.
ROWS: BoundedCache[tuple[str, str, str], UserRows] = BoundedCache(ROWS_CAPACITY)


# Loaded global rankers by the sha256 of their (verified) ONNX and weights bytes.
GLOBALS: BoundedCache[str, GlobalRanker] = BoundedCache(4)
