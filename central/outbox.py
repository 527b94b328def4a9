"""What the engine hands a request's gRPC thread: a bounded, never-blocking stream.

The engine thread serves every request, so it must never wait on any one
client. It puts results into the request's `Outbox` without blocking;
the request's own gRPC thread takes them out and sends them. The bound is
on bytes: while a request's outbox holds `max_bytes` or more, the engine
does no further work for it that would add more (`has_room`), so a client
that stops reading costs its own buffer and nothing else. Small, bounded
results (a candidate: K of them at most) are always accepted.

The outbox also tells the engine whether the reader is stuck: `stuck_for`
is how long the gRPC thread has been inside a send that has not returned
(gRPC blocks it while the client's flow-control window is full).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import grpc

__all__ = ["Outbox", "StreamEnd"]


@dataclass(frozen=True)
class StreamEnd:
    """How a stream ended early: the status and message the client is to get."""

    code: grpc.StatusCode
    details: str


class Outbox:
    """Events of one request, from the engine thread to the request's gRPC thread."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._events: deque[tuple[Any, int]] = deque()
        self._bytes = 0
        self._closed = False
        self._end: StreamEnd | None = None
        self._ready = threading.Condition()
        self._sending_since: float | None = None  # set while the reader is inside a send

    def put(self, event: Any, size: int = 0) -> None:
        """Adds `event` (about `size` bytes); never blocks. Ignored once closed."""
        with self._ready:
            if self._closed:
                return
            self._events.append((event, size))
            self._bytes += size
            self._ready.notify()

    def has_room(self) -> bool:
        """False while the reader has `max_bytes` or more still to take."""
        with self._ready:
            return self._bytes < self.max_bytes

    def close(self, end: StreamEnd | None = None) -> None:
        """No more events; `end` (if any) is what the stream ends with, events not yet
        taken are dropped. The first close wins."""
        with self._ready:
            if self._closed:
                return
            self._closed = True
            self._end = end
            if end is not None:
                self._events.clear()
                self._bytes = 0
            self._ready.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def take(self, timeout: float | None = None) -> Any:
        """The next event (blocking); `StreamEnd` or None once closed and drained.
        `TimeoutError` if none came within `timeout` seconds (None: wait as long as it takes)."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._ready:
            while not self._events and not self._closed:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError
                self._ready.wait(left)
            if self._events:
                event, size = self._events.popleft()
                self._bytes -= size
                return event
            return self._end

    def sending(self, busy: bool) -> None:
        """The reader marks the time it hands a message to gRPC, and when it returns."""
        self._sending_since = time.monotonic() if busy else None

    def stuck_for(self, now: float) -> float:
        """Seconds the reader has been inside one send (0 when it is not sending)."""
        since = self._sending_since
        return 0.0 if since is None else now - since
