"""Process start-up for the central service.

Binds loopback by default; adds the standard gRPC health service and server
reflection (v1 and v1alpha); optional TLS (and mutual TLS) and a bearer-token
check; message size limits; graceful shutdown on SIGTERM / SIGINT. Every
setting is checked by `central.config.validate_config` before the model loads.
"""

from __future__ import annotations

import hmac
import logging
import os
import sys
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool

from language_ranker.v1 import ranker_pb2 as pb

from ._errors import ConfigError, MissingDependencyError, missing_extra
from ._signals import stop_requested, wait_for_stop
from .config import ServerConfig, exposure_warning, server_threads, validate_config
from .model import LoadedModel, load_model

try:  # the central extra (torch comes in with the servicer): name it, not a bare import
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

    from .decoding import pack_linears
    from .handlers import add_central_service
    from .service import CentralServicer
except ImportError as error:
    if (module := missing_extra(error)) is None:
        raise
    raise MissingDependencyError("central's gRPC server", module) from error

__all__ = [
    "REFLECTION_V1",
    "BearerTokenInterceptor",
    "RunningServer",
    "serve_forever",
    "start_server",
]

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CentralService"].full_name
# On shutdown, how long the engine thread may take to finish its current piece of work
# once every request has been cancelled (each piece is bounded: see EngineConfig.turn_tokens)
ENGINE_STOP_SECONDS = 10.0
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"  # grpcio-reflection ships only v1alpha


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Rejects calls without ``authorization: Bearer <token>`` (health checks exempt).

    The scheme is matched case-insensitively (``bearer``, ``BEARER``), as HTTP
    auth schemes are (RFC 9110, section 11.1); the token is compared in constant
    time, so response timing does not reveal how much of a guess was right.
    """

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or details.method.startswith("/grpc.health.v1.Health/"):
            return handler
        sent = _bearer_credentials(details.invocation_metadata)
        if sent is not None and hmac.compare_digest(sent.encode(), self._token):
            return handler
        return _rejecting(handler)


def _bearer_credentials(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of an ``authorization: <bearer scheme, any case> <token>`` header, or None."""
    sent = dict(metadata or ()).get("authorization")
    if not isinstance(sent, str):
        return None
    scheme, _, credentials = sent.strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def _rejecting(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    def deny(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny, **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny, **kwargs)
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(deny, **kwargs)
    return grpc.unary_unary_rpc_method_handler(deny, **kwargs)


@dataclass
class RunningServer:
    """A started server; `stop()` shuts it down gracefully."""

    server: grpc.Server
    port: int  # the port actually bound
    health: health.HealthServicer
    servicer: CentralServicer
    grace_seconds: float

    def stop(self, grace: float | None = None) -> bool:
        """Drains, then stops. Health says NOT_SERVING at once and new work is refused
        (UNAVAILABLE) while calls in flight get `grace` seconds (default: the configured
        grace) to finish; the rest are then cancelled and the server stops.

        Returns False if the engine thread was still inside a computation after
        `ENGINE_STOP_SECONDS` (it stops after its current piece of work): a
        process must then not let Python finalise while it runs (see
        `serve_forever`)."""
        grace = self.grace_seconds if grace is None else grace
        self.health.enter_graceful_shutdown()
        engine = self.servicer.engine
        engine.stop_admitting()
        if not engine.wait_idle(grace):
            log.info("shutdown: grace period over, cancelling %d requests", engine.admitted)
        stopped = self.servicer.close(ENGINE_STOP_SECONDS)
        self.server.stop(1.0).wait()  # the cancelled calls' last messages
        return stopped

    def wait(self) -> None:
        self.server.wait_for_termination()


def start_server(config: ServerConfig, loaded: LoadedModel | None = None) -> RunningServer:
    """Checks every setting, loads the model (unless given one), binds, and starts serving.

    A bad setting raises `ConfigError` before the model loads, a device this
    machine lacks (``--device cuda`` without CUDA) or a dtype it cannot run
    included; a non-loopback bind without TLS and client authentication is
    refused unless ``config.insecure``, and then logged as a warning. The
    model, device and dtype settings apply to the model loaded here; a
    ``loaded`` model is served where it is.
    """
    config = validate_config(config)
    if (exposure := exposure_warning(config)) is not None:
        log.warning("INSECURE (--insecure): %s", exposure)
    if loaded is None:  # ours alone: keep one (packed, on a CPU) copy of each weight
        loaded = load_model(
            config.model,
            dtype=config.dtype,
            weights=config.weights,
            cache_dir=config.cache_dir,
            device=config.device,
        )
        pack_linears(loaded.model)  # dense fp32: oneDNN's packed copy (int8: none left)
    token = config.auth_token
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=server_threads(config), thread_name_prefix="rpc"),
        interceptors=[BearerTokenInterceptor(token)] if token else [],
        options=[
            ("grpc.max_receive_message_length", config.max_receive_bytes),
            ("grpc.max_send_message_length", config.max_send_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    servicer = CentralServicer(loaded, config.limits, config.engine)
    add_central_service(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    _enable_reflection(server, [SERVICE_NAME, health.SERVICE_NAME])
    port = _bind(server, config)
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    servicer.engine.on_health(lambda serving: _report_health(health_servicer, serving))
    # debug: `serve_forever` prints the one "serving" line a user reads
    log.debug("serving %s on %s", _serving(loaded), _address(config.host, port))
    return RunningServer(server, port, health_servicer, servicer, config.grace_seconds)


def _serving(loaded: LoadedModel) -> str:
    """The model, its device and weight format (int8, or the dense dtype), as the serving
    line names them."""
    dtype = str(loaded.model.dtype).removeprefix("torch.")
    return f"{loaded.name} ({loaded.device}, {loaded.weights_format or dtype})"


def _report_health(health_servicer: health.HealthServicer, serving: bool) -> None:
    """What the engine says of itself, as the health service says it (NOT_SERVING while
    it is stuck; once draining, the health service keeps NOT_SERVING whatever this says)."""
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else (health_pb2.HealthCheckResponse.NOT_SERVING)
    )
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, status)


def _enable_reflection(server: grpc.Server, services: list[str]) -> None:
    """Serves server reflection as v1alpha and as v1.

    grpcio-reflection implements only v1alpha, while current clients (grpcurl,
    Postman, grpc-js tools) ask for v1 first. v1 is the same protocol under a
    new package name, its messages identical field for field, so one v1alpha
    servicer answers both: under v1 its messages travel as the same bytes.
    """
    _add_reflection_v1_descriptor()
    names = [*services, reflection.SERVICE_NAME, REFLECTION_V1]
    servicer = reflection.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1_info = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": v1_info}),)
    )


def _add_reflection_v1_descriptor() -> None:
    """Puts grpc/reflection/v1/reflection.proto in the default pool, so a client can
    ask reflection to describe the v1 service itself: v1alpha's file, renamed."""
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(REFLECTION_V1)
        return  # already there (a newer grpcio-reflection, or an earlier server)
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = f".{proto.package}.", ".grpc.reflection.v1."
    proto.name, proto.package = "grpc/reflection/v1/reflection.proto", new.strip(".")
    proto.ClearField("options")  # v1alpha's java_package and the like
    for message in proto.message_type:
        for one_field in message.field:
            if one_field.HasField("type_name"):  # message-typed fields only
                one_field.type_name = one_field.type_name.replace(old, new)
    for method in proto.service[0].method:
        method.input_type = method.input_type.replace(old, new)
        method.output_type = method.output_type.replace(old, new)
    pool.AddSerializedFile(proto.SerializeToString())


def _address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 literal in brackets (``[::1]:50051``)."""
    bare = host.removeprefix("[").removesuffix("]")
    return f"[{bare}]:{port}" if ":" in bare else f"{bare}:{port}"


def _bind(server: grpc.Server, config: ServerConfig) -> int:
    address = _address(config.host, config.port)
    try:
        if config.tls_cert is not None and config.tls_key is not None:
            client_ca = config.tls_client_ca.read_bytes() if config.tls_client_ca else None
            credentials = grpc.ssl_server_credentials(
                [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())],
                root_certificates=client_ca,
                require_client_auth=client_ca is not None,
            )
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError:  # grpcio raises where older versions returned 0
        port = 0
    if port == 0:
        raise ConfigError(
            "--port", f"cannot be bound at {address}: in use, or not an address of this machine"
        )
    return port


def serve_forever(config: ServerConfig) -> None:
    """Runs until SIGTERM or SIGINT, then shuts down gracefully, and returns within the
    grace period plus about `ENGINE_STOP_SECONDS` whatever is in flight.

    If the engine thread is still inside a computation by then, the process
    exits here (status 0) without finalising Python: a thread that comes
    back from a torch call while the interpreter finalises is ended by
    CPython with ``pthread_exit``, whose unwinding through torch's C++
    frames aborts the process (SIGABRT, "terminate called without an
    active exception").
    """
    running = start_server(config)
    stopping = stop_requested()
    where = _address(config.host, running.port)
    print(f"ranker-central: serving {_serving(running.servicer.loaded)} on {where}", flush=True)
    wait_for_stop(stopping)
    if not running.stop():
        log.warning("shutdown: the engine is still inside a computation; exiting without it")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
