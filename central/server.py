"""Process start-up for the central service.

Binds loopback by default; adds the standard gRPC health service and server
reflection; optional TLS (and mutual TLS) and a bearer-token check; message
size limits; graceful shutdown on SIGTERM / SIGINT.
"""

from __future__ import annotations

import hmac
import logging
import os
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from language_ranker.v1 import ranker_pb2 as pb
from language_ranker.v1 import ranker_pb2_grpc as pb_grpc

from .model import LoadedModel, load_model
from .service import CentralServicer
from .validation import ServiceLimits

__all__ = [
    "BearerTokenInterceptor",
    "RunningServer",
    "ServerConfig",
    "serve_forever",
    "start_server",
]

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CentralService"].full_name
TOKEN_ENV = "RANKER_CENTRAL_TOKEN"
MiB = 1 << 20


@dataclass
class ServerConfig:
    """Everything `ranker-central serve` can be told."""

    model: str = "default"  # checkpoint directory, .gguf file, or an embedded model name
    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 50051  # 0 picks a free port (see RunningServer.port)
    dtype: str = "float32"  # torch dtype the model runs in
    cache_dir: Path | None = (
        None  # converted GGUF weights; None: $LANGUAGE_RANKER_CACHE or ~/.cache
    )
    max_workers: int = 8  # concurrent RPCs in flight; generation itself is serialised
    limits: ServiceLimits = field(default_factory=ServiceLimits)
    max_receive_bytes: int = 4 * MiB  # largest request accepted
    max_send_bytes: int = 64 * MiB  # largest single response message
    tls_cert: Path | None = None  # PEM certificate chain; with tls_key enables TLS
    tls_key: Path | None = None  # PEM private key
    tls_client_ca: Path | None = None  # PEM CA; when set, clients must present a certificate
    auth_token: str | None = None  # bearer token required on every call but health checks
    grace_seconds: float = 5.0  # in-flight RPCs get this long to finish on shutdown


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Rejects calls without `authorization: Bearer <token>` (health checks exempt)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or details.method.startswith("/grpc.health.v1.Health/"):
            return handler
        sent = dict(details.invocation_metadata).get("authorization", "")
        if isinstance(sent, str) and hmac.compare_digest(sent.encode(), self._expected):
            return handler
        return _rejecting(handler)


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

    def stop(self, grace: float | None = None) -> None:
        """Reports NOT_SERVING, lets in-flight calls finish, then stops."""
        self.health.enter_graceful_shutdown()
        self.server.stop(self.grace_seconds if grace is None else grace).wait()

    def wait(self) -> None:
        self.server.wait_for_termination()


def start_server(config: ServerConfig, loaded: LoadedModel | None = None) -> RunningServer:
    """Loads the model (unless given one), binds, and starts serving."""
    if loaded is None:
        loaded = load_model(config.model, dtype=config.dtype, cache_dir=config.cache_dir)
    token = config.auth_token or os.environ.get(TOKEN_ENV) or None
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="rpc"),
        interceptors=[BearerTokenInterceptor(token)] if token else [],
        options=[
            ("grpc.max_receive_message_length", config.max_receive_bytes),
            ("grpc.max_send_message_length", config.max_send_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    servicer = CentralServicer(loaded, config.limits)
    pb_grpc.add_CentralServiceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    port = _bind(server, config)
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving %s on %s:%d", loaded.name, config.host, port)
    return RunningServer(server, port, health_servicer, servicer, config.grace_seconds)


def _bind(server: grpc.Server, config: ServerConfig) -> int:
    address = f"{config.host}:{config.port}"
    if config.tls_cert or config.tls_key:
        if not (config.tls_cert and config.tls_key):
            raise ValueError("TLS needs both a certificate and a key")
        client_ca = config.tls_client_ca.read_bytes() if config.tls_client_ca else None
        credentials = grpc.ssl_server_credentials(
            [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind {address}")
    return port


def serve_forever(config: ServerConfig) -> None:
    """Runs until SIGTERM or SIGINT, then shuts down gracefully."""
    running = start_server(config)
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(
        f"ranker-central: serving {running.servicer.loaded.name} on {config.host}:{running.port}",
        flush=True,
    )
    stopping.wait()
    running.stop()
