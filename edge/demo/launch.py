"""Starting a local central service for the demo, as a real child process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from edge._errors import ConnectionLostError

__all__ = ["local_central"]

_READY_PREFIX = "ranker-central: serving"


@contextmanager
def local_central(model: str = "default", *, timeout: float = 600.0) -> Iterator[str]:
    """Runs `ranker-central serve --port 0` and yields its address until exit.

    The child prints one line naming its port once the model is loaded and
    the server accepts calls; it is stopped with SIGTERM (graceful) on exit.
    """
    command = [sys.executable, "-m", "central.cli", "serve", "--model", model, "--port", "0"]
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        address = _wait_for_address(child, timeout)
        threading.Thread(target=_drain, args=(child,), daemon=True).start()
        yield address
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()


def _wait_for_address(child: subprocess.Popen[str], timeout: float) -> str:
    assert child.stdout is not None
    deadline = time.monotonic() + timeout
    log: list[str] = []
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break  # the child exited
        log.append(line)
        if line.startswith(_READY_PREFIX):
            return line.rsplit(" on ", 1)[1].strip()
    tail = "".join(log[-20:])
    raise ConnectionLostError(f"ranker-central did not start (exit code {child.poll()}):\n{tail}")


def _drain(child: subprocess.Popen[str]) -> None:
    # Keep reading the child's log so a full pipe never blocks it.
    assert child.stdout is not None
    for _ in child.stdout:
        pass
