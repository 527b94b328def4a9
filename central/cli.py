"""`ranker-central`: serve a model, or prepare its cached weights."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from ._errors import ModelLoadError
from .server import TOKEN_ENV, ServerConfig, serve_forever
from .validation import ServiceLimits

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ranker-central", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC feature service")
    _model_args(serve)
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback)")
    serve.add_argument("--port", type=int, default=50051, help="0 picks a free port")
    serve.add_argument(
        "--max-k",
        type=int,
        default=ServiceLimits.max_k,
        help="largest K a request may ask for (default: %(default)s)",
    )
    serve.add_argument(
        "--max-new-tokens",
        type=int,
        default=ServiceLimits.max_new_tokens,
        help="largest max_new_tokens a request may ask for",
    )
    serve.add_argument("--max-workers", type=int, default=8, help="concurrent RPCs")
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate chain (enables TLS)")
    serve.add_argument("--tls-key", type=Path, help="PEM private key")
    serve.add_argument(
        "--tls-client-ca", type=Path, help="require client certificates from this CA"
    )
    serve.add_argument(
        "--token-file", type=Path, help=f"require this bearer token (or set ${TOKEN_ENV})"
    )

    prepare = commands.add_parser("prepare", help="load a model once, caching converted weights")
    _model_args(prepare)
    return parser


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="default",
        help="checkpoint directory, .gguf file, 'default' or 'gemma3-270m'",
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--cache-dir", type=Path, help="where converted GGUF weights are kept")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        if args.command == "prepare":
            return _prepare(args)
        serve_forever(_server_config(args))
    except ModelLoadError as error:
        print(f"ranker-central: {error}", file=sys.stderr)
        return 2
    return 0


def _server_config(args: argparse.Namespace) -> ServerConfig:
    token = args.token_file.read_text().strip() if args.token_file else None
    return ServerConfig(
        model=args.model,
        host=args.host,
        port=args.port,
        dtype=args.dtype,
        cache_dir=args.cache_dir,
        max_workers=args.max_workers,
        limits=ServiceLimits(max_k=args.max_k, max_new_tokens=args.max_new_tokens),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        auth_token=token,
    )


def _prepare(args: argparse.Namespace) -> int:
    from .model import load_model

    started = time.perf_counter()
    loaded = load_model(args.model, dtype=args.dtype, cache_dir=args.cache_dir)
    print(
        json.dumps(
            {
                "model": loaded.name,
                "num_layers": loaded.num_layers,
                "hidden_size": loaded.hidden_size,
                "context_length": loaded.context_length,
                "has_chat_template": loaded.has_chat_template,
                "seconds": round(time.perf_counter() - started, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
