"""How both servers (`ranker-central serve`, `ranker-central-scale`) learn to stop."""

from __future__ import annotations

import logging
import signal
import threading

__all__ = ["stop_requested", "wait_for_stop"]

# How often the main thread wakes to run signal handlers (see `wait_for_stop`).
POLL_SECONDS = 0.2

log = logging.getLogger(__name__)


def stop_requested() -> threading.Event:
    """An event set by SIGTERM or SIGINT (from now on, in the main thread)."""
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stopping


def wait_for_stop(stopping: threading.Event) -> None:
    """Blocks the main thread until `stopping` is set, waking every `POLL_SECONDS`.

    Not one untimed ``stopping.wait()``: the kernel may deliver SIGTERM to any
    thread that does not block it (a gRPC or engine thread), and then the
    main thread's untimed wait is never interrupted, so CPython never gets
    to run the Python handler that would set the event: the server kept
    serving (health SERVING) after SIGTERM. A timed wait returns to the
    interpreter, which runs pending handlers.
    """
    while not stopping.wait(POLL_SECONDS):
        pass
