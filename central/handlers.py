"""The CentralService's method handlers, with malformed requests answered, not raised.

grpcio's generated registration parses each request with the message's
``FromString``; bytes that do not parse raise inside gRPC, which logs a full
traceback and answers INTERNAL (a fuzzer produced thousands of them). These
handlers parse leniently instead: bytes that are not the method's request
message reach the servicer's method as a `Malformed` marker, and the call
is answered INVALID_ARGUMENT with one log line.

The handlers are built from the service descriptor, so a method added to the
``.proto`` is served (or fails loudly) without editing this file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf import message_factory
from google.protobuf.message import DecodeError, Message

from language_ranker.v1 import ranker_pb2 as pb

__all__ = ["Malformed", "add_central_service"]

log = logging.getLogger(__name__)

_SERVICE = pb.DESCRIPTOR.services_by_name["CentralService"]


@dataclass(frozen=True)
class Malformed:
    """Request bytes that did not parse as the method's request message."""

    message: str  # the request message's full name
    reason: str  # the parser's complaint


def add_central_service(servicer: Any, server: grpc.Server) -> None:
    """Registers `servicer`'s methods on `server` with lenient request parsing."""
    handlers = {method.name: _handler(servicer, method) for method in _SERVICE.methods}
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(_SERVICE.full_name, handlers),)
    )
    server.add_registered_method_handlers(_SERVICE.full_name, handlers)


def _handler(servicer: Any, method: Any) -> grpc.RpcMethodHandler:
    if method.client_streaming:
        raise NotImplementedError(f"{method.full_name}: client streaming is not served")
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    behavior = getattr(servicer, method.name)
    kwargs = {
        "request_deserializer": _lenient(request_class),
        "response_serializer": response_class.SerializeToString,
    }
    if method.server_streaming:
        return grpc.unary_stream_rpc_method_handler(_streaming(behavior, method.name), **kwargs)
    return grpc.unary_unary_rpc_method_handler(_unary(behavior, method.name), **kwargs)


def _lenient(request_class: type[Message]) -> Callable[[bytes], Message | Malformed]:
    def parse(data: bytes) -> Message | Malformed:
        try:
            return request_class.FromString(data)
        except (DecodeError, ValueError, RuntimeError) as error:
            return Malformed(request_class.DESCRIPTOR.full_name, str(error) or type(error).__name__)

    return parse


def _unary(behavior: Callable[..., Any], name: str) -> Callable[..., Any]:
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, Malformed):
            _reject(context, name, request)
        return behavior(request, context)

    return call


def _streaming(behavior: Callable[..., Iterator[Any]], name: str) -> Callable[..., Iterator[Any]]:
    def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        if isinstance(request, Malformed):
            _reject(context, name, request)
        yield from behavior(request, context)

    return call


def _reject(context: grpc.ServicerContext, name: str, request: Malformed) -> NoReturn:
    log.info("%s: malformed request (%s)", name, request.reason)
    context.abort(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"the request is not a valid {request.message}: {request.reason}",
    )
    raise AssertionError("ServicerContext.abort returns only by raising")
