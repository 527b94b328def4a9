"""What `ranker-central-scale` can be told, checked before Ray or the model starts.

The same fail-closed rules as `ranker-central serve` (`central.config`), read
for Ray Serve's gRPC proxy, which listens on every interface of every node
that runs one and has no TLS:

- by default only callers on the proxy's own machine are served (the replica
  checks the caller's address), as `ranker-central serve` binds loopback;
- ``public`` serves other machines, and is refused without a bearer token
  (``token_file``, ``auth_token`` or $RANKER_CENTRAL_TOKEN) unless
  ``insecure`` says so; an empty token is an error, never "auth off";
- traffic is never encrypted by the proxy, so `exposure_warning` always says
  so for a public deployment: put TLS in front of it or keep it on a private
  network (docs/scale-out.md).

Model, limits and token are checked by `central.config.validate_config`
itself, so a flag shared with ``ranker-central serve`` fails the same way.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .._errors import ConfigError
from ..config import TOKEN_ENV, EngineConfig, ServerConfig, ServiceLimits, validate_config
from ..device import AUTO

__all__ = [
    "PROXY_LOCATIONS",
    "ScaleConfig",
    "exposure_warning",
    "replica_device",
    "validate_scale_config",
]

PROXY_LOCATIONS = ("EveryNode", "HeadOnly")  # where Ray Serve runs its proxies


@dataclass
class ScaleConfig:
    """Everything `ranker-central-scale` can be told: the model, the replicas, the cluster."""

    model: str = "default"  # checkpoint directory, .gguf file or embedded name, on every node
    # Where each replica runs its model: auto (a GPU when gpus_per_replica reserves one,
    # else the CPU), cpu, cuda or cuda:N (N counts the GPUs Ray gives the replica)
    device: str = AUTO
    dtype: str = AUTO  # torch dtype the model runs in; auto: float32 on a CPU, bfloat16 on a GPU
    weights: str = "auto"  # the linears' weight format (central.config.WEIGHTS)
    cache_dir: Path | None = (
        None  # converted GGUF weights; None: $LANGUAGE_RANKER_CACHE or ~/.cache
    )
    limits: ServiceLimits = field(default_factory=ServiceLimits)  # what one request may ask for
    engine: EngineConfig = field(default_factory=EngineConfig)  # each replica's batching engine
    # Replicas: a fixed count, or autoscaling between `replicas` and `max_replicas`.
    replicas: int = 1  # replicas started (the minimum when autoscaling)
    max_replicas: int | None = None  # None: fixed at `replicas`; larger: autoscale up to it
    # Calls one replica takes at once; more wait at the proxy. As many as its engine
    # batches (EngineConfig.max_batch_requests): fewer would starve the batching.
    max_ongoing_requests: int = 64
    target_ongoing_requests: float = 8.0  # autoscaling aims at this many calls per replica
    cpus_per_replica: float = 1.0  # Ray CPUs reserved by each replica (its torch threads)
    gpus_per_replica: float = 0.0  # Ray GPUs reserved by each replica
    # The cluster: join one (`address`) or start a local one for this command.
    address: str | None = None  # Ray address ("auto": the `ray start` cluster here); None: local
    num_cpus: int | None = None  # a local cluster's CPUs; None: every core (ignored when joining)
    port: int = 50051  # the gRPC proxy's port on every node that runs a proxy
    http_port: int = 8000  # Ray Serve's HTTP proxy (loopback only; central does not use it)
    proxy_location: str = "EveryNode"  # one proxy on every node with a replica, or "HeadOnly"
    app_name: str = "ranker-central"  # the Ray Serve application (the `application` metadata)
    request_timeout_s: float | None = None  # the proxy's end-to-end limit per call; None: none
    # Who may call.
    public: bool = False  # serve callers on other machines (needs a token unless `insecure`)
    # Bearer token required on every call but health checks; None: token_file, else
    # $RANKER_CENTRAL_TOKEN, else none. Never empty: that is an error.
    auth_token: str | None = None
    token_file: Path | None = None  # file holding the token (surrounding whitespace dropped)
    insecure: bool = False  # allow `public` without a token (warns)

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas is not None and self.max_replicas > self.replicas


def validate_scale_config(
    config: ScaleConfig, environ: Mapping[str, str] | None = None
) -> ScaleConfig:
    """The config with its token resolved, or `ConfigError` for the first bad option.

    Loads nothing: model path, dtype, limits and token go through
    `central.config.validate_config`; the rest is checked here. Idempotent.
    """
    server = validate_config(
        ServerConfig(
            model=config.model,
            device=config.device,
            dtype=config.dtype,
            weights=config.weights,
            cache_dir=config.cache_dir,
            port=config.port,
            limits=config.limits,
            engine=config.engine,
            auth_token=config.auth_token,
            token_file=config.token_file,
        ),
        environ,
    )
    resolved = dataclasses.replace(config, auth_token=server.auth_token, token_file=None)
    _check_replicas(resolved)
    _check_device(resolved)
    _check_cluster(resolved)
    if resolved.public and resolved.auth_token is None and not resolved.insecure:
        raise ConfigError(
            "--public",
            f"serves other machines, which needs a bearer token (--token-file or ${TOKEN_ENV}); "
            "pass --insecure to serve them without one",
        )
    return resolved


def exposure_warning(config: ScaleConfig) -> str | None:
    """What a public deployment exposes (always cleartext; maybe no auth), or None."""
    if not config.public:
        return None
    problems = ["without TLS (Ray Serve's gRPC proxy has none: terminate TLS in front of it)"]
    if config.auth_token is None:
        problems.append("without client authentication (anyone who reaches the port)")
    return f"serving other machines on port {config.port} " + " and ".join(problems)


def _check_replicas(config: ScaleConfig) -> None:
    counts = {
        "--replicas": config.replicas,
        "--max-ongoing-requests": config.max_ongoing_requests,
    }
    for option, value in counts.items():
        if not value >= 1:
            raise ConfigError(option, f"must be at least 1, got {value}")
    if config.max_replicas is not None and config.max_replicas < config.replicas:
        raise ConfigError(
            "--max-replicas",
            f"must be at least --replicas ({config.replicas}), got {config.max_replicas}",
        )
    if not config.target_ongoing_requests > 0:
        raise ConfigError(
            "--target-ongoing-requests", f"must be above 0, got {config.target_ongoing_requests}"
        )
    if not config.cpus_per_replica >= 0 or not config.gpus_per_replica >= 0:
        raise ConfigError(
            "--cpus-per-replica" if config.cpus_per_replica < 0 else "--gpus-per-replica",
            "must be at least 0",
        )


def replica_device(config: ScaleConfig) -> str:
    """The device a replica loads its model on.

    Ray shows a replica only the GPUs it reserved (CUDA_VISIBLE_DEVICES), so
    ``auto`` is decided here rather than by what the replica happens to see:
    ``cuda`` when `gpus_per_replica` reserves one (a replica without a GPU
    fails to start, naming it, instead of serving from the CPU unnoticed),
    ``cpu`` when it reserves none.
    """
    if config.device == AUTO:
        return "cuda" if config.gpus_per_replica > 0 else "cpu"
    return config.device


def _check_device(config: ScaleConfig) -> None:
    """The device and the GPUs reserved must agree (the GPUs are checked in each replica)."""
    device, gpus = config.device, config.gpus_per_replica
    if device == "cpu" and gpus > 0:
        raise ConfigError(
            "--gpus-per-replica", f"reserves {gpus:g} GPU(s) a replica with --device cpu never uses"
        )
    if device.startswith("cuda"):
        if gpus <= 0:
            raise ConfigError(
                "--device",
                f"{device} needs --gpus-per-replica above 0: Ray shows a replica only the GPUs "
                "it reserves",
            )
        index = int(device.partition(":")[2] or 0)
        if index >= math.ceil(gpus):
            raise ConfigError(
                "--device",
                f"{device}: a replica sees {math.ceil(gpus)} GPU(s) with --gpus-per-replica "
                f"{gpus:g}, numbered from cuda:0",
            )


def _check_cluster(config: ScaleConfig) -> None:
    if config.address is not None and not config.address.strip():
        raise ConfigError("--address", "is empty (use auto, or host:port of the head node)")
    if config.num_cpus is not None and config.num_cpus < 1:
        raise ConfigError("--num-cpus", f"must be at least 1, got {config.num_cpus}")
    for option, port in (("--port", config.port), ("--http-port", config.http_port)):
        if not 1 <= port <= 65535:  # every node's proxy binds the same port: 0 cannot work
            raise ConfigError(option, f"must be between 1 and 65535, got {port}")
    if config.port == config.http_port:
        raise ConfigError("--http-port", f"must differ from --port ({config.port})")
    if config.proxy_location not in PROXY_LOCATIONS:
        raise ConfigError(
            "--proxy-location",
            f"must be one of {', '.join(PROXY_LOCATIONS)}, got {config.proxy_location!r}",
        )
    if config.request_timeout_s is not None and not config.request_timeout_s > 0:
        raise ConfigError(
            "--request-timeout", f"must be above 0 seconds, got {config.request_timeout_s}"
        )
    if not config.app_name.strip():
        raise ConfigError("--app-name", "is empty")
