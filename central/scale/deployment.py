"""One Ray Serve replica of central: the model, its engine, and the RPC methods.

Ray Serve's gRPC proxy calls the deployment method named after the RPC
(``/language_ranker.v1.CentralService/Generate`` calls `CentralReplica.Generate`)
with the decoded request and a `RayServegRPCContext`. Each method here checks
who is calling (`CallGate`), then hands the request to a `CentralServicer`
built in this replica, the same servicer `ranker-central serve` runs, so the
replica answers exactly what the single-process server answers.

The servicer blocks (forward passes), so `central.scale.bridge` runs it on
worker threads, never on the replica's event loop; a call the proxy cancels
(client gone, deadline passed) stops the servicer's work.

Health: ``grpc.health.v1.Health/Check`` is routed like any other call, so a
SERVING answer comes from a replica that has its model loaded, reached through
the proxy. ``Watch`` is not offered (UNIMPLEMENTED): a long-lived stream would
pin one replica.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote

import grpc

from language_ranker.v1 import ranker_pb2 as pb

from ..config import is_loopback
from .bridge import run_stream, run_unary
from .config import ScaleConfig, replica_device
from .context import RayContext, ReplicaCallContext

__all__ = ["SERVICE_NAME", "CallGate", "CentralReplica", "peer_host"]

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CentralService"].full_name


def peer_host(peer: str) -> str:
    """The address in a gRPC peer string (``ipv4:127.0.0.1:5000`` -> ``127.0.0.1``), or "".

    IPv6 peers may come URL-quoted and IPv4-mapped (``ipv6:%5B::ffff:10.0.0.1%5D:5000``
    -> ``10.0.0.1``); anything but ipv4/ipv6 (a unix socket) gives "".
    """
    kind, _, rest = unquote(peer).partition(":")
    if kind not in ("ipv4", "ipv6"):
        return ""
    host = rest.rpartition(":")[0].removeprefix("[").removesuffix("]")
    try:
        mapped = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped is not None:
        return str(mapped.ipv4_mapped)
    return host


class CallGate:
    """Who may call: loopback peers unless ``public``, and the bearer token when one is set.

    Ray Serve's gRPC proxy listens on every interface and has no place for an
    interceptor, so the checks `ranker-central serve` makes at bind time and in
    its `BearerTokenInterceptor` are made here, per call, in the replica.
    Health checks need no token, as in `ranker-central serve`.
    """

    def __init__(self, token: str | None, public: bool) -> None:
        self._token = token.encode() if token else None
        self._public = public

    def check(self, call: ReplicaCallContext, health: bool = False) -> None:
        """Returns if the call may go on; otherwise aborts it (raises)."""
        if not self._public and not is_loopback(peer_host(call.peer())):
            call.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "this central accepts callers on its own machine only; "
                "start it with --public (and a token) to serve other machines",
            )
        if self._token is None or health:
            return
        sent = _bearer_credentials(call.invocation_metadata())
        if sent is None or not hmac.compare_digest(sent.encode(), self._token):
            call.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")


def _bearer_credentials(metadata: Any) -> str | None:
    """The token of an ``authorization: <bearer scheme, any case> <token>`` header, or None."""
    sent = dict(metadata or ()).get("authorization")
    if not isinstance(sent, str):
        return None
    scheme, _, credentials = sent.strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


class CentralReplica:
    """The Ray Serve deployment class: one model and one `CentralServicer` per replica.

    Wrapped with ``serve.deployment`` by `central.scale.app.build_app`, which
    sets replicas, resources and autoscaling from the same `ScaleConfig`.
    """

    def __init__(self, config: ScaleConfig) -> None:
        from ray import serve

        from ..model import load_model
        from ..service import CentralServicer

        loaded = load_model(
            config.model,
            dtype=config.dtype,
            weights=config.weights,
            cache_dir=config.cache_dir,
            device=replica_device(config),
        )
        self._servicer = CentralServicer(loaded, config.limits, config.engine)
        self._gate = CallGate(config.auth_token, config.public)
        # Ray Serve admits at most max_ongoing_requests calls per replica; a few more
        # threads let Info and health checks through while generation fills the rest.
        self._pool = ThreadPoolExecutor(
            max_workers=config.max_ongoing_requests + 4, thread_name_prefix="central"
        )
        self.name = _actor_name() or serve.get_replica_context().replica_id.to_full_id_str()
        log.info("replica %s serving %s on %s", self.name, loaded.name, loaded.device)

    # language_ranker.v1.CentralService

    async def Info(self, request: pb.InfoRequest, grpc_context: RayContext) -> pb.InfoResponse:
        call = self._open(grpc_context)
        return await run_unary(self._pool, self._servicer.Info, request, call)

    async def Features(
        self, request: pb.FeaturesRequest, grpc_context: RayContext
    ) -> pb.FeaturesResponse:
        call = self._open(grpc_context)
        return await run_unary(self._pool, self._servicer.Features, request, call)

    async def Generate(
        self, request: pb.GenerateRequest, grpc_context: RayContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        call = self._open(grpc_context)
        async for response in run_stream(self._pool, self._servicer.Generate, request, call):
            yield response

    # grpc.health.v1.Health

    async def Check(self, request: Any, grpc_context: RayContext) -> Any:
        """SERVING for "" and CentralService (this replica has its model), NOT_SERVING
        while its engine is stuck; NOT_FOUND for any other service."""
        from grpc_health.v1 import health_pb2

        call = ReplicaCallContext(grpc_context, self.name)
        self._gate.check(call, health=True)
        if request.service not in ("", SERVICE_NAME):
            call.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        serving = self._servicer.engine.serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else (health_pb2.HealthCheckResponse.NOT_SERVING)
        )
        return health_pb2.HealthCheckResponse(status=status)

    def check_health(self) -> None:
        """Ray Serve's own probe: a replica whose engine is stuck is replaced."""
        if not self._servicer.engine.serving:
            raise RuntimeError("the engine has made no progress for stuck_seconds")

    async def Watch(self, request: Any, grpc_context: RayContext) -> AsyncIterator[Any]:
        """UNIMPLEMENTED: poll Check instead (a watch would pin one replica)."""
        call = ReplicaCallContext(grpc_context, self.name)
        call.abort(grpc.StatusCode.UNIMPLEMENTED, "Watch is not served through Ray; use Check")
        yield  # an async generator, as the proxy streams Watch

    # Plumbing.

    def _open(self, grpc_context: RayContext) -> ReplicaCallContext:
        call = ReplicaCallContext(grpc_context, self.name)
        self._gate.check(call)
        return call

    def __del__(self) -> None:
        """Ray Serve calls this when the replica shuts down: stop the engine, free threads."""
        close = getattr(getattr(self, "_servicer", None), "close", None)
        if callable(close):
            close()
        if (pool := getattr(self, "_pool", None)) is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _actor_name() -> str | None:
    """This replica's Ray actor name (``ray.get_actor(name, namespace="serve")`` finds it)."""
    import ray

    try:
        return ray.get_runtime_context().get_actor_name()
    except Exception:  # outside an actor (a unit test): the caller falls back
        return None
