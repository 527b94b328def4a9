"""`ranker-central-scale`: central on Ray Serve, one command.

Without ``--address`` it starts a local Ray cluster for itself; with
``--address auto`` it joins the cluster ``ray start`` made on this machine,
whose other machines joined with ``ray start --address <head>:6379``
(docs/scale-out.md). Every flag is checked before Ray or the model starts: a
bad one ends the command with one line naming it and exit status 2, as
``ranker-central serve`` does. Ctrl-C or SIGTERM removes the deployment.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from .._argparse import EXIT_ERROR, DefaultsFormatter, OneLineParser
from .._errors import ServiceError
from ..config import DTYPE_CHOICES, TOKEN_ENV, WEIGHTS, ServiceLimits
from ..device import DEVICE_NAMES
from ..model import DEFAULT_MODEL, EMBEDDED_MODELS
from .config import PROXY_LOCATIONS, ScaleConfig, validate_scale_config

__all__ = ["main"]

PROG = "ranker-central-scale"
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports it
# What serving needs beyond the runtime install: the central and scale extras.
NEEDED = {
    "torch": "central",
    "transformers": "central",
    "grpc_health": "central",
    "ray.serve": "scale",
}


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Serve central's gRPC service from Ray Serve replicas (one model each) "
        "behind Ray Serve's gRPC proxy: same .proto, same clients.",
        formatter_class=DefaultsFormatter,
    )
    _model_args(parser)
    _replica_args(parser)
    _cluster_args(parser)
    _access_args(parser)
    return parser


def _model_args(parser: argparse.ArgumentParser) -> None:
    limits, embedded = ServiceLimits(), ", ".join(EMBEDDED_MODELS)
    group = parser.add_argument_group("model (loaded by every replica, on its own machine)")
    group.add_argument(
        "--model",
        default=ScaleConfig.model,
        help=f"checkpoint directory or .gguf file at the same path on every machine, or an "
        f"embedded model ({embedded}; 'default' is {DEFAULT_MODEL})",
    )
    group.add_argument(
        "--device",
        default=ScaleConfig.device,
        help=f"where each replica runs its model: {DEVICE_NAMES}; auto is a GPU when "
        "--gpus-per-replica reserves one, else the CPU",
    )
    group.add_argument(
        "--dtype",
        default=ScaleConfig.dtype,
        choices=DTYPE_CHOICES,
        help="torch dtype; auto is float32 on a CPU, bfloat16 on a GPU",
    )
    group.add_argument(
        "--weights",
        default=ScaleConfig.weights,
        choices=WEIGHTS,
        help="the linears' weights: int8, int8-upper (fp32 features, int8 above them), "
        "dense (as --dtype), or auto (int8 on a CPU)",
    )
    group.add_argument(
        "--cache-dir",
        type=Path,
        help="where converted GGUF weights are kept; when unset, $LANGUAGE_RANKER_CACHE "
        "or ~/.cache/language-ranker",
    )
    group.add_argument(
        "--max-k", type=int, default=limits.max_k, help="largest K a request may ask for"
    )
    group.add_argument(
        "--max-new-tokens",
        type=int,
        default=limits.max_new_tokens,
        help="largest max_new_tokens a request may ask for",
    )


def _replica_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("replicas")
    group.add_argument(
        "--replicas",
        type=int,
        default=ScaleConfig.replicas,
        help="replicas to run (the minimum when --max-replicas is larger)",
    )
    group.add_argument(
        "--max-replicas",
        type=int,
        help="autoscale between --replicas and this on queued calls (unset: fixed count)",
    )
    group.add_argument(
        "--target-ongoing-requests",
        type=float,
        default=ScaleConfig.target_ongoing_requests,
        help="calls per replica autoscaling aims at",
    )
    group.add_argument(
        "--max-ongoing-requests",
        type=int,
        default=ScaleConfig.max_ongoing_requests,
        help="calls one replica takes at once; more wait at the proxy",
    )
    group.add_argument(
        "--cpus-per-replica",
        type=float,
        default=ScaleConfig.cpus_per_replica,
        help="Ray CPUs each replica reserves",
    )
    group.add_argument(
        "--gpus-per-replica",
        type=float,
        default=ScaleConfig.gpus_per_replica,
        help="Ray GPUs each replica reserves; its model then runs on one (see --device)",
    )


def _cluster_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cluster")
    group.add_argument(
        "--address",
        help="Ray cluster to join: 'auto' for the one `ray start` made here, or "
        "<head>:6379 (unset: start a local cluster for this command)",
    )
    group.add_argument(
        "--num-cpus", type=int, help="CPUs of the local cluster (unset: all; not with --address)"
    )
    group.add_argument(
        "--port",
        type=int,
        default=ScaleConfig.port,
        help="gRPC port of the proxy on every node that runs one",
    )
    group.add_argument(
        "--http-port",
        type=int,
        default=ScaleConfig.http_port,
        help="Ray Serve's HTTP proxy port (loopback only; unused by central)",
    )
    group.add_argument(
        "--proxy-location",
        default=ScaleConfig.proxy_location,
        choices=PROXY_LOCATIONS,
        help="run a proxy on every node with a replica, or on the head node only",
    )
    group.add_argument(
        "--app-name",
        default=ScaleConfig.app_name,
        help="Ray Serve application name (clients send it as `application` metadata only "
        "when the cluster serves several applications)",
    )
    group.add_argument(
        "--request-timeout",
        type=float,
        help="the proxy's limit on one call in seconds (unset: the client's deadline only)",
    )


def _access_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("access (the proxy listens on every interface, no TLS)")
    group.add_argument(
        "--public",
        action="store_true",
        help="serve callers on other machines (needs a token unless --insecure); "
        "otherwise callers on the proxy's own machine only",
    )
    group.add_argument(
        "--token-file",
        type=Path,
        help="file holding the bearer token every call but health checks must send; "
        f"when unset, ${TOKEN_ENV} if set, else none; an empty token is an error",
    )
    group.add_argument(
        "--insecure",
        action="store_true",
        help="allow --public without a token (warns)",
    )


def _config(args: argparse.Namespace) -> ScaleConfig:
    return ScaleConfig(
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        weights=args.weights,
        cache_dir=args.cache_dir,
        limits=ServiceLimits(max_k=args.max_k, max_new_tokens=args.max_new_tokens),
        replicas=args.replicas,
        max_replicas=args.max_replicas,
        target_ongoing_requests=args.target_ongoing_requests,
        max_ongoing_requests=args.max_ongoing_requests,
        cpus_per_replica=args.cpus_per_replica,
        gpus_per_replica=args.gpus_per_replica,
        address=args.address,
        num_cpus=args.num_cpus,
        port=args.port,
        http_port=args.http_port,
        proxy_location=args.proxy_location,
        app_name=args.app_name,
        request_timeout_s=args.request_timeout,
        public=args.public,
        token_file=args.token_file,
        insecure=args.insecure,
    )


def _missing_extra() -> str | None:
    """The first module serving needs that is missing, with the pip command, or None."""
    for module, extra in NEEDED.items():
        try:
            importlib.import_module(module)
        except ImportError:
            return f"needs {module}, which is not installed: pip install 'language-ranker[{extra}]'"
    return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = validate_scale_config(_config(args))
        if (missing := _missing_extra()) is not None:
            print(f"{PROG}: {missing}", file=sys.stderr)
            return EXIT_ERROR
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        from .app import serve_forever

        serve_forever(config)
    except ServiceError as error:  # ConfigError, ModelLoadError
        print(f"{PROG}: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
