"""How both servers (`ranker-central serve`, `ranker-central-scale`) learn to stop."""

from __future__ import annotations

import logging
import signal
import threading

__all__ = ["stop_requested"]

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
