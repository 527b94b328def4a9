"""Running the blocking servicer from a replica's event loop.

`CentralServicer` methods block (forward passes, waiting on the engine), and
a Ray Serve replica answers calls from an asyncio event loop, so each call is
handed to a worker thread: `run_unary` runs one method there; `run_stream`
runs a Generate stream there and relays its responses through an asyncio
queue as they come.

Cancellation goes the other way. When the proxy cancels a call (the client
went away, its deadline passed) the awaiting coroutine is cancelled; the call
context is then cancelled too, so the servicer sees ``is_active() == False``
at its next check, and the stream is closed on its own thread (GeneratorExit
in the servicer stops its work). Either way the context's callbacks run once
when the call ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from typing import Any, TypeVar

from .context import ReplicaCallContext

__all__ = ["run_stream", "run_unary"]

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_END = object()  # the pump's last message: the servicer's stream is exhausted


async def run_unary(
    pool: Executor,
    method: Callable[[_Request, Any], _Response],
    request: _Request,
    call: ReplicaCallContext,
) -> _Response:
    """``method(request, call)`` on a worker thread; cancelling the await cancels the call."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(pool, method, request, call)
    except asyncio.CancelledError:
        call.cancel()
        raise
    finally:
        call.end()


async def run_stream(
    pool: Executor,
    method: Callable[[_Request, Any], Iterator[_Response]],
    request: _Request,
    call: ReplicaCallContext,
) -> AsyncIterator[_Response]:
    """The responses of ``method(request, call)``, produced on a worker thread.

    Closing this generator early (or cancelling its consumer) cancels the call
    and closes the servicer's stream; an exception the stream raised (such as
    `CallAborted`) is raised here.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()

    def put(item: object) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    pool.submit(_pump, lambda: method(request, call), call, put)
    try:
        while (item := await queue.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        call.cancel()  # a no-op once the stream has ended; otherwise stops the work
        call.end()


def _pump(
    start: Callable[[], Iterator[object]],
    call: ReplicaCallContext,
    put: Callable[[object], None],
) -> None:
    """Runs a servicer stream on this thread, handing each response to ``put``.

    Ends with `_END` or the exception the stream raised. Stops early once the
    call is cancelled, and closes the stream here, on the thread it ran on.
    """
    responses = start()
    try:
        for response in responses:
            put(response)
            if not call.is_active():
                return
        put(_END)
    except BaseException as error:
        put(error)
    finally:
        close = getattr(responses, "close", None)
        if close is not None:
            close()
