"""What the central server can be told, and the checks it passes before anything loads.

Loading a model takes seconds to minutes, so a typo in a flag must not wait
for it: `validate_config` checks every setting first, torch-free, and raises
`ConfigError` naming the option (``--tls-key is required with --tls-cert``).
It fails closed: an empty or whitespace-only token is an error, never "auth
off", and a non-loopback address is served only with TLS and a way to
authenticate clients (a bearer token or client certificates) unless
``insecure`` (``--insecure``) says otherwise, which `exposure_warning` then
reports loudly.

Options are named by their `ranker-central serve` flag; each flag sets the
`ServerConfig` field of the same name with ``-`` read as ``_``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ._errors import ConfigError
from .device import AUTO, check_device_name
from .model import DEFAULT_MODEL, EMBEDDED_MODELS, INT8_FORMATS, WEIGHT_FORMATS

__all__ = [
    "DTYPES",
    "DTYPE_CHOICES",
    "TOKEN_ENV",
    "WEIGHTS",
    "EngineConfig",
    "ServerConfig",
    "ServiceLimits",
    "check_model_options",
    "exposure_warning",
    "is_loopback",
    "server_threads",
    "validate_config",
]

TOKEN_ENV = "RANKER_CENTRAL_TOKEN"  # the bearer token, when no --token-file is given
DTYPES = ("float32", "bfloat16", "float16")  # torch dtypes a model can run in
# How the linears hold their weights (central.model.load_model): "auto" is int8
# (central.model.AUTO_CPU_FORMAT) on a CPU where the kernel works (float32 dtype,
# Llama-family models) and dense elsewhere; "dense" keeps --dtype; "int8" (every linear)
# and "int8-upper" (the layers above the feature layer, and the LM head) insist (CPU,
# float32), and fail the start where they cannot run.
WEIGHTS = WEIGHT_FORMATS
DTYPE_CHOICES = (AUTO, *DTYPES)  # what --dtype accepts: auto is float32 on a CPU, bfloat16 on a GPU
MiB = 1 << 20


@dataclass(frozen=True)
class ServiceLimits:
    """What a single request may ask for (reported by Info), and how its work is batched."""

    max_k: int = 64  # GenerateRequest.k must be in 1..max_k
    max_new_tokens: int = 1024  # largest SamplingParams.max_new_tokens accepted
    max_feature_responses: int = 256  # most responses in one Features request
    features_batch: int = 8  # responses per forward pass in Features
    # Payload of one TokenFeatures message; equals token_features.DEFAULT_CHUNK_BYTES
    # (a literal here so that this module stays torch-free).
    token_chunk_bytes: int = 256 * 1024
    token_batch: int = 4  # responses per forward pass when computing per-token features
    # Work one request may bring, checked on arrival (RESOURCE_EXHAUSTED names the limit).
    max_prompt_bytes: int = 256 * 1024  # prompt size, checked before it is tokenised
    # prompt + K x max_new_tokens of a Generate: 16 candidates of 1,024 tokens fit, 64 of 1,024 not
    max_request_tokens: int = 32 * 1024
    max_features_tokens: int = 32 * 1024  # all responses of one Features request, in tokens
    # Tokens (rows x longest response) in one Features pass: bounds its memory (see engine)
    features_pass_tokens: int = 1024
    # Text of all responses of one Features request, checked before it is tokenised
    max_features_bytes: int = 512 * 1024


@dataclass(frozen=True)
class EngineConfig:
    """How the engine shares the model among requests (see `central.engine`)."""

    max_batch_rows: int = 256  # candidate rows decoding at once, across all requests
    # Requests sharing the model at once (decoding or in a Features pass); 1 serves one
    # request at a time, as releases before the engine did (the benchmark's baseline)
    max_batch_requests: int = 64
    max_queued_requests: int = 64  # requests waiting for room; past it RESOURCE_EXHAUSTED
    # Responses held for a client that has not read them yet, per request; work that
    # would add more waits (so a slow reader costs memory only up to this)
    max_buffered_bytes: int = 8 * MiB
    # A client that has not taken a message for this long is cancelled (its stream
    # ends CANCELLED), freeing its rows and its server thread
    stall_seconds: float = 30.0
    # The scheduling budget: tokens of work outside the decode batch (prompt prefill,
    # Features and per-token passes) between two decode steps, and the most one pass of
    # it feeds. Running requests get a token every step plus about this much other work,
    # however long a prompt or response is (see central.engine)
    turn_tokens: int = 256
    # An engine that finishes no piece of work for this long is stuck: health says
    # NOT_SERVING, what it holds fails UNAVAILABLE and new work is refused until it moves
    stuck_seconds: float = 60.0


@dataclass
class ServerConfig:
    """Everything `ranker-central serve` can be told."""

    model: str = "default"  # checkpoint directory, .gguf file, or an embedded model name
    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 50051  # 0 picks a free port (see RunningServer.port)
    # Where the model runs: auto (the first CUDA device, else the CPU), cpu, cuda or cuda:N
    device: str = AUTO
    dtype: str = AUTO  # torch dtype the model runs in, one of DTYPES; auto: per device
    weights: str = "auto"  # the linears' weight format, one of WEIGHTS (see there)
    cache_dir: Path | None = (
        None  # converted GGUF weights; None: $LANGUAGE_RANKER_CACHE or ~/.cache
    )
    # Server threads. None: one per request the engine admits (max_batch_requests +
    # max_queued_requests) plus 16 that keep health checks and Info answering under load
    max_workers: int | None = None
    limits: ServiceLimits = field(default_factory=ServiceLimits)
    engine: EngineConfig = field(default_factory=EngineConfig)
    max_receive_bytes: int = 4 * MiB  # largest request accepted
    max_send_bytes: int = 64 * MiB  # largest single response message
    tls_cert: Path | None = None  # PEM certificate chain; with tls_key enables TLS
    tls_key: Path | None = None  # PEM private key (unencrypted) of tls_cert
    tls_client_ca: Path | None = None  # PEM CA; when set, clients must present a certificate
    # Bearer token required on every call but health checks. None: read token_file,
    # else $RANKER_CENTRAL_TOKEN, else no token. Never empty: that is an error.
    auth_token: str | None = None
    token_file: Path | None = None  # file holding the token (surrounding whitespace dropped)
    insecure: bool = False  # allow a non-loopback bind without TLS and client authentication
    grace_seconds: float = 5.0  # in-flight RPCs get this long to finish on shutdown


def validate_config(config: ServerConfig, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """The config with its token resolved, or `ConfigError` for the first bad option.

    Reads the token file and the certificate files (to prove they parse) but
    loads nothing heavy, so it runs in a torch-free install too. ``environ``
    (default ``os.environ``) supplies $RANKER_CENTRAL_TOKEN. Idempotent: the
    result has ``auth_token`` set and ``token_file`` cleared.
    """
    check_model_options(config.model, config.dtype, config.cache_dir, config.weights)
    check_device_name(config.device)
    if config.weights in INT8_FORMATS and config.device.startswith("cuda"):
        raise ConfigError(
            "--weights", f"{config.weights} runs on the CPU; on a GPU use auto or dense"
        )
    _check_address(config.host, config.port)
    _check_sizes(config)
    _check_tls(config)
    token = _resolve_token(config, os.environ if environ is None else environ)
    resolved = dataclasses.replace(config, auth_token=token, token_file=None)
    if not resolved.insecure and exposure_warning(resolved) is not None:
        raise ConfigError(
            "--host",
            f"{config.host} is not a loopback address: serving it needs TLS (--tls-cert, "
            f"--tls-key) and client authentication (--token-file, ${TOKEN_ENV} or "
            "--tls-client-ca); pass --insecure to serve it without them",
        )
    return resolved


def server_threads(config: ServerConfig) -> int:
    """The server's thread count: `max_workers`, or enough for every admitted request plus 16."""
    if config.max_workers is not None:
        return config.max_workers
    return config.engine.max_batch_requests + config.engine.max_queued_requests + 16


def exposure_warning(config: ServerConfig) -> str | None:
    """Why serving ``config`` exposes the model to anyone who can reach it, or None.

    None on a loopback address, or with TLS and client authentication (a token
    or client certificates). ``config`` must have come out of `validate_config`.
    """
    if is_loopback(config.host):
        return None
    missing = []
    if config.tls_cert is None:
        missing.append("TLS (anyone on the network path can read the traffic)")
    if config.auth_token is None and config.tls_client_ca is None:
        missing.append("client authentication (anyone who reaches the port can use the model)")
    if not missing:
        return None
    return f"serving {config.host} without " + " and without ".join(missing)


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1 (bracketed or not)."""
    name = host.strip().removeprefix("[").removesuffix("]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_model_options(
    model: str, dtype: str, cache_dir: Path | None, weights: str = "auto"
) -> None:
    """`ConfigError` unless ``--model``, ``--dtype``, ``--weights`` and ``--cache-dir`` can work.

    Embedded names are resolved when the model loads (locating their files can
    take a while); anything else must be a path that exists now.
    """
    if not model.strip():
        raise ConfigError("--model", "is empty")
    known = ["default", *EMBEDDED_MODELS]
    key = DEFAULT_MODEL if model == "default" else model.lower()
    if key not in EMBEDDED_MODELS:
        path = Path(model).expanduser()
        if not path.exists():
            raise ConfigError(
                "--model", f"{model!r} is neither an existing path nor one of: {', '.join(known)}"
            )
        if not (path.is_dir() or path.suffix == ".gguf"):
            raise ConfigError(
                "--model", f"{path} is neither a checkpoint directory nor a .gguf file"
            )
    if dtype not in DTYPE_CHOICES:
        raise ConfigError("--dtype", f"must be one of {', '.join(DTYPE_CHOICES)}, got {dtype!r}")
    if weights not in WEIGHTS:
        raise ConfigError("--weights", f"must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    if weights in INT8_FORMATS and dtype not in (AUTO, "float32"):
        raise ConfigError("--weights", f"{weights} runs with --dtype float32, not {dtype}")
    if cache_dir is not None and cache_dir.exists() and not cache_dir.is_dir():
        raise ConfigError("--cache-dir", f"{cache_dir} exists and is not a directory")


def _check_address(host: str, port: int) -> None:
    if not host.strip() or any(c.isspace() for c in host):
        raise ConfigError("--host", f"must be an address or host name, got {host!r}")
    if not 0 <= port <= 65535:
        raise ConfigError("--port", f"must be between 0 and 65535, got {port}")


# The count-like settings the command line exposes; the others are named by their field.
_FLAGS = {
    "max_workers": "--max-workers",
    "limits.max_k": "--max-k",
    "limits.max_new_tokens": "--max-new-tokens",
    "engine.max_batch_rows": "--max-batch-rows",
    "engine.max_batch_requests": "--max-batch-requests",
    "engine.max_queued_requests": "--max-queued-requests",
    "engine.stall_seconds": "--stall-seconds",
    "engine.turn_tokens": "--turn-tokens",
    "engine.stuck_seconds": "--stuck-seconds",
}


def _check_sizes(config: ServerConfig) -> None:
    counts = {
        f"limits.{f.name}": getattr(config.limits, f.name)
        for f in dataclasses.fields(ServiceLimits)
    }
    counts |= {
        f"engine.{f.name}": getattr(config.engine, f.name) for f in dataclasses.fields(EngineConfig)
    }
    counts |= {
        "max_workers": server_threads(config),
        "max_receive_bytes": config.max_receive_bytes,
        "max_send_bytes": config.max_send_bytes,
    }
    for name, value in counts.items():
        if not value >= 1:
            raise ConfigError(_FLAGS.get(name, name), f"must be at least 1, got {value}")
    if config.max_workers is not None and config.max_workers <= (
        admitted := config.engine.max_batch_requests + config.engine.max_queued_requests
    ):
        raise ConfigError(
            "--max-workers",
            f"must exceed max_batch_requests + max_queued_requests ({admitted}): every "
            "admitted request holds a thread, and health checks need one too",
        )
    if not config.grace_seconds >= 0:
        raise ConfigError("grace_seconds", f"must be at least 0, got {config.grace_seconds}")


def _check_tls(config: ServerConfig) -> None:
    cert, key, client_ca = config.tls_cert, config.tls_key, config.tls_client_ca
    if cert is not None and key is None:
        raise ConfigError("--tls-key", "is required with --tls-cert")
    if key is not None and cert is None:
        raise ConfigError("--tls-cert", "is required with --tls-key")
    if client_ca is not None and cert is None:
        raise ConfigError("--tls-client-ca", "needs --tls-cert and --tls-key")
    if cert is not None and key is not None:
        _check_certificates("--tls-cert", cert)
        _check_private_key(key, cert)
    if client_ca is not None:
        _check_certificates("--tls-client-ca", client_ca)


def _check_certificates(option: str, path: Path) -> None:
    _readable(option, path)
    try:
        ssl.create_default_context().load_verify_locations(cafile=path)
    except ssl.SSLError as error:
        raise ConfigError(option, f"{path} holds no PEM certificate ({error.reason})") from error


def _check_private_key(key: Path, cert: Path) -> None:
    if b"ENCRYPTED" in _readable("--tls-key", key):
        raise ConfigError("--tls-key", f"{key} is encrypted; gRPC needs an unencrypted PEM key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:  # also proves the key belongs to the certificate
        context.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as error:
        raise ConfigError(
            "--tls-key", f"{key} is not the PEM private key of {cert} ({error.reason})"
        ) from error


def _readable(option: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigError(option, f"cannot be read: {path}: {error.strerror}") from error


def _resolve_token(config: ServerConfig, environ: Mapping[str, str]) -> str | None:
    # Where the token comes from, in order: auth_token, --token-file, $RANKER_CENTRAL_TOKEN.
    if config.auth_token is not None and config.token_file is not None:
        raise ConfigError("--token-file", "cannot be combined with auth_token; give one")
    if config.auth_token is not None:
        option, where, raw = "auth_token", "", config.auth_token
    elif config.token_file is not None:
        option, where = "--token-file", f"{config.token_file} "
        try:
            raw = _readable(option, config.token_file).decode()
        except UnicodeDecodeError as error:
            raise ConfigError(option, f"{where}is not UTF-8 text") from error
    elif TOKEN_ENV in environ:
        option, where, raw = f"${TOKEN_ENV}", "", environ[TOKEN_ENV]
    else:
        return None
    token = raw.strip()
    if not token:
        raise ConfigError(
            option,
            f"{where}holds an empty or whitespace-only token: refusing to serve without auth",
        )
    if not all(33 <= ord(c) <= 126 for c in token):
        raise ConfigError(
            option, f"{where}must hold printable ASCII without spaces (it is sent as a header)"
        )
    return token
