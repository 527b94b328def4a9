"""`ranker-central`: serve a model, or prepare its cached weights.

Every flag is checked before anything heavy is imported: a bad one ends the
command with one line naming it (``ranker-central: --tls-key is required with
--tls-cert``) and exit status 2, never a traceback after the model has loaded.
Nothing here imports torch until a command needs the model, so ``--help``
works in a runtime-only install, and a missing ``central`` extra is named.
Progress bars are drawn only on a terminal; in logs and pipes the commands
print just their result.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import socket
import sys
import time
from pathlib import Path

from ._argparse import EXIT_ERROR, DefaultsFormatter, OneLineParser
from ._errors import ConfigError, ServiceError, require_extra
from .config import (
    DTYPE_CHOICES,
    TOKEN_ENV,
    WEIGHTS,
    EngineConfig,
    ServerConfig,
    ServiceLimits,
    check_model_options,
    validate_config,
)
from .device import DEVICE_NAMES
from .model import DEFAULT_MODEL, EMBEDDED_MODELS

__all__ = ["main"]

PROG = "ranker-central"
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports it
# What each command needs beyond the runtime install: the central extra.
MODEL_MODULES = ("torch", "transformers", "gguf")
SERVER_MODULES = (*MODEL_MODULES, "grpc_health", "grpc_reflection")


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Serve a base LLM's sampled candidates with their hidden-state features "
        "over gRPC, or convert a GGUF model once into the cache.",
        formatter_class=DefaultsFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the gRPC feature service",
        description="Load a model and serve Generate, Features and Info over gRPC.",
        formatter_class=DefaultsFormatter,
    )
    _model_args(serve)
    _serve_args(serve)
    prepare = commands.add_parser(
        "prepare",
        help="load a model once, caching converted GGUF weights",
        description="Convert a GGUF model once into the cache, so later starts are fast.",
        formatter_class=DefaultsFormatter,
    )
    _model_args(prepare)
    return parser


def _model_args(parser: argparse.ArgumentParser) -> None:
    embedded = ", ".join(EMBEDDED_MODELS)
    parser.add_argument(
        "--model",
        default="default",
        help=f"checkpoint directory, .gguf file, or an embedded model ({embedded}; "
        f"'default' is {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--dtype",
        default=ServerConfig.dtype,
        choices=DTYPE_CHOICES,
        help="torch dtype the model runs in; auto is float32 on a CPU, bfloat16 on a GPU",
    )
    parser.add_argument(
        "--weights",
        default="auto",
        choices=WEIGHTS,
        help="the linears' weights: int8 (the fastest on a CPU; features ~0.999 cosine to "
        "fp32, and rankers check which they were trained on), int8-upper (fp32 up to the "
        "default feature layer B, int8 above it and in the LM head: features equal to "
        "dense's bit for bit; 1.2-1.3x dense's speed at K=1 and 1.6x at K=16, 0.7x int8's; "
        "reported as int8-upper@B), dense (as --dtype), or auto: int8 on a CPU where the "
        "kernel works, for Llama-family models; else dense",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="where converted GGUF weights are kept; when unset, $LANGUAGE_RANKER_CACHE "
        "or ~/.cache/language-ranker",
    )


def _serve_args(parser: argparse.ArgumentParser) -> None:
    limits = ServiceLimits()
    parser.add_argument(
        "--device",
        default=ServerConfig.device,
        help=f"where the model runs: {DEVICE_NAMES}; auto takes the first CUDA device if "
        "torch sees one, else the CPU",
    )
    parser.add_argument(
        "--host",
        default=ServerConfig.host,
        help="bind address; anything but loopback needs TLS and a token (or --insecure)",
    )
    parser.add_argument(
        "--port", type=int, default=ServerConfig.port, help="TCP port; 0 picks a free one"
    )
    parser.add_argument(
        "--max-k", type=int, default=limits.max_k, help="largest K a request may ask for"
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=limits.max_new_tokens,
        help="largest max_new_tokens a request may ask for",
    )
    engine = EngineConfig()
    parser.add_argument(
        "--max-batch-rows",
        type=int,
        default=engine.max_batch_rows,
        help="candidate rows decoding at once, across all requests",
    )
    parser.add_argument(
        "--max-batch-requests",
        type=int,
        default=engine.max_batch_requests,
        help="requests sharing the model at once; 1 serves one request at a time",
    )
    parser.add_argument(
        "--max-queued-requests",
        type=int,
        default=engine.max_queued_requests,
        help="requests waiting for room; beyond them a call gets RESOURCE_EXHAUSTED",
    )
    parser.add_argument(
        "--max-request-tokens",
        type=int,
        default=limits.max_request_tokens,
        help="work one Generate may bring: prompt + k x max_new_tokens",
    )
    parser.add_argument(
        "--stall-seconds",
        type=float,
        default=engine.stall_seconds,
        help="a client that has not read for this long is cancelled",
    )
    parser.add_argument(
        "--turn-tokens",
        type=int,
        default=engine.turn_tokens,
        help="tokens of prefill, Features and per-token work between two decode steps "
        "(the most one such pass feeds): lower keeps running requests producing faster "
        "while others start",
    )
    parser.add_argument(
        "--stuck-seconds",
        type=float,
        default=engine.stuck_seconds,
        help="an engine that finishes no piece of work for this long reports NOT_SERVING "
        "and fails what it holds with UNAVAILABLE until it moves again",
    )
    parser.add_argument(
        "--max-workers",
        type=int,
        default=None,
        help="server threads; when unset, one per admitted request plus 16 for health and Info",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads the engine computes with; 0 leaves torch's own choice",
    )
    parser.add_argument(
        "--tls-cert", type=Path, help="PEM certificate chain; with --tls-key, serve over TLS"
    )
    parser.add_argument("--tls-key", type=Path, help="unencrypted PEM private key of --tls-cert")
    parser.add_argument(
        "--tls-client-ca",
        type=Path,
        help="PEM CA certificates; clients must present a certificate they signed (mutual TLS)",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        help="file holding the bearer token every call but health checks must send; "
        f"when unset, ${TOKEN_ENV} if set, else none; an empty token is an error",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="serve a non-loopback --host without TLS or client authentication (warns)",
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _quiet_unless_terminal()
    try:
        if args.command == "prepare":
            return _prepare(args)
        return _serve(args)
    except ServiceError as error:  # ConfigError, MissingDependencyError, ModelLoadError
        print(f"{PROG}: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _quiet_unless_terminal() -> None:
    """Turns off every tqdm bar (transformers draws several) when stderr is no terminal.

    tqdm reads TQDM_* defaults when it is first imported, which is later:
    nothing imported so far imports it.
    """
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")


def _server_config(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        model=args.model,
        host=args.host,
        port=args.port,
        device=args.device,
        dtype=args.dtype,
        weights=args.weights,
        cache_dir=args.cache_dir,
        max_workers=args.max_workers,
        limits=ServiceLimits(
            max_k=args.max_k,
            max_new_tokens=args.max_new_tokens,
            max_request_tokens=args.max_request_tokens,
        ),
        engine=EngineConfig(
            max_batch_rows=args.max_batch_rows,
            max_batch_requests=args.max_batch_requests,
            max_queued_requests=args.max_queued_requests,
            stall_seconds=args.stall_seconds,
            turn_tokens=args.turn_tokens,
            stuck_seconds=args.stuck_seconds,
        ),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        token_file=args.token_file,
        insecure=args.insecure,
    )


def _serve(args: argparse.Namespace) -> int:
    if args.threads < 0:
        raise ConfigError("--threads", f"must be at least 0, got {args.threads}")
    config = validate_config(_server_config(args))
    _check_port_free(config.host, config.port)  # before the model's minute of loading
    require_extra(*SERVER_MODULES, what=f"{PROG} serve")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from .server import serve_forever

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    serve_forever(config)
    return 0


def _check_port_free(host: str, port: int) -> None:
    """ConfigError naming --port when something already listens on host:port.

    Binds and closes a probe socket as gRPC will (SO_REUSEADDR: a port in
    TIME_WAIT is free). Something may still take the port during the load;
    binding then fails with the same message."""
    if port == 0:
        return
    bare = host.strip().removeprefix("[").removesuffix("]")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            bare, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise ConfigError(
                "--port",
                f"{port} is in use on {host} (another ranker-central?); "
                "stop that server or choose another --port",
            ) from None
        why = error.strerror or str(error)
        raise ConfigError("--host", f"{host} cannot be bound here: {why}") from None


def _prepare(args: argparse.Namespace) -> int:
    check_model_options(args.model, args.dtype, args.cache_dir, args.weights)
    require_extra(*MODEL_MODULES, what=f"{PROG} prepare")
    from .model import converted_dir, load_model, resolve_model_path

    started = time.perf_counter()
    path = resolve_model_path(args.model)
    loaded = load_model(str(path), dtype=args.dtype, weights=args.weights, cache_dir=args.cache_dir)
    if path.suffix == ".gguf":
        where = f"converted weights cached in {converted_dir(path, args.cache_dir)}"
    else:
        where = f"a checkpoint directory, used in place: {path}"
    print(
        f"{PROG}: {loaded.name} ready ({loaded.num_layers} layers, hidden size "
        f"{loaded.hidden_size}, {loaded.weights_format} weights) in "
        f"{time.perf_counter() - started:.1f} s; {where}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
