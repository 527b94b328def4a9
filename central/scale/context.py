"""The gRPC call context a `CentralServicer` expects, made from Ray Serve's.

Ray Serve hands a deployment method a `ray.serve.grpc_util.RayServegRPCContext`:
a picklable snapshot of the proxy's call (metadata, peer, code, details,
trailing metadata) that travels back to the proxy with every response. It has
no `abort`, no `is_active`, no callbacks and no deadline, which the servicer
uses. `ReplicaCallContext` supplies those on the replica's side:

- `abort` records the code and details on Ray's context and raises
  `CallAborted`; the replica then reports that status to the proxy, which
  sends it to the client unchanged (INVALID_ARGUMENT stays INVALID_ARGUMENT).
- `is_active` turns False once the call is cancelled: the client went away or
  its deadline passed (the proxy cancels the replica's task and the
  deployment calls `cancel`), or the servicer cancelled it itself.
- `add_callback` functions run once when the call ends, as in grpcio.
- `time_remaining` is None: the client's deadline is not forwarded by the
  proxy; it arrives as a cancellation instead.
- every response carries the trailing metadata ``x-ranker-replica`` naming
  the replica that served it, next to whatever the servicer sets.

Nothing here imports Ray: the wrapped context is used only through the few
methods named in `RayContext`, so the adapter is tested without a cluster.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import NoReturn, Protocol

import grpc

__all__ = ["REPLICA_METADATA_KEY", "CallAborted", "RayContext", "ReplicaCallContext"]

log = logging.getLogger(__name__)

REPLICA_METADATA_KEY = "x-ranker-replica"  # trailing metadata: which replica served the call

Metadata = Sequence[tuple[str, str | bytes]]


class RayContext(Protocol):
    """What `ReplicaCallContext` uses of `ray.serve.grpc_util.RayServegRPCContext`."""

    def invocation_metadata(self) -> list[tuple[str, str]]: ...

    def peer(self) -> str: ...

    def code(self) -> grpc.StatusCode | None: ...

    def details(self) -> str | None: ...

    def set_code(self, code: grpc.StatusCode) -> None: ...

    def set_details(self, details: str) -> None: ...

    def set_trailing_metadata(self, trailing_metadata: list[tuple[str, str]]) -> None: ...


class CallAborted(Exception):
    """Raised by `ReplicaCallContext.abort`; the status is already on Ray's context.

    Ray Serve sees the code set on its context and answers the client with
    that code and details instead of INTERNAL.
    """

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    def __reduce__(self) -> tuple[type[CallAborted], tuple[grpc.StatusCode, str]]:
        # Ray pickles it back to the proxy; the default would call CallAborted(message).
        return CallAborted, (self.code, self.details)


class ReplicaCallContext:
    """The `grpc.ServicerContext` subset central's servicer uses, over Ray Serve's context."""

    def __init__(self, ray_context: RayContext, replica: str) -> None:
        self._ray = ray_context
        self._replica = replica  # what REPLICA_METADATA_KEY says
        self._cancelled = threading.Event()  # set from the event loop, read by worker threads
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._ended = False
        self.set_trailing_metadata(())  # every response names its replica

    # What the servicer calls.

    def is_active(self) -> bool:
        """False once the call was cancelled (client gone, deadline passed, or `cancel`)."""
        return not self._cancelled.is_set()

    def time_remaining(self) -> float | None:
        """None: the proxy does not forward the client's deadline (it cancels instead)."""
        return None

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        """Ends the call with ``code`` and ``details``: records them, then raises."""
        self._ray.set_code(code)
        self._ray.set_details(details)
        raise CallAborted(code, details)

    def add_callback(self, callback: Callable[[], None]) -> bool:
        """Runs ``callback`` when the call ends; False (not added) if it already has."""
        with self._lock:
            if self._ended:
                return False
            self._callbacks.append(callback)
            return True

    def invocation_metadata(self) -> Metadata:
        return tuple(self._ray.invocation_metadata())

    def peer(self) -> str:
        return self._ray.peer()

    def set_trailing_metadata(self, trailing_metadata: Metadata) -> None:
        """The servicer's trailing metadata, plus the replica's name."""
        kept = [(k, v) for k, v in trailing_metadata if k != REPLICA_METADATA_KEY]
        self._ray.set_trailing_metadata([*kept, (REPLICA_METADATA_KEY, self._replica)])  # type: ignore[list-item]

    def set_code(self, code: grpc.StatusCode) -> None:
        self._ray.set_code(code)

    def set_details(self, details: str) -> None:
        self._ray.set_details(details)

    def cancel(self) -> None:
        """Cancels the call: `is_active` turns False, so the work stops at its next check."""
        self._cancelled.set()

    # What the deployment calls.

    def end(self) -> None:
        """The call is over (finished, failed or cancelled): runs the callbacks once."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # a callback's failure must not hide the call's own outcome
                log.exception("a call-end callback failed")
