"""One bounded, thread-safe cache for the learners' in-process memory (package infrastructure).

The learners keep a few recent things between updates (users' rows, loaded
global rankers, random bases, warm torch models); each is a handful of entries
that are cheap to rebuild, so the oldest inserted is dropped first. ``take``
removes the entry it returns: a caller that mutates it must not leave a
half-updated value behind when it fails.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

__all__ = ["BoundedCache"]

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """At most ``capacity`` entries; putting one more drops the oldest inserted."""

    def __init__(self, capacity: int) -> None:
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            return self._entries.get(key)

    def take(self, key: K) -> V | None:
        """Remove and return the entry (None when absent)."""
        with self._lock:
            return self._entries.pop(key, None)

    def put(self, key: K, value: V) -> V:
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        return value

    def values(self) -> list[V]:
        """Every entry held now, oldest inserted first."""
        with self._lock:
            return list(self._entries.values())

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
