"""Every exception the central service raises on purpose, in one place.

The servicer turns them into gRPC statuses; the command line turns them into
a one-line message and an exit code. The root is ``ServiceError``, not
``CentralError``: in the edge SDK ``edge.CentralError`` means "talking to the
central service failed", which is what a client sees when central raises one
of these, so no name means two things.

    ServiceError                anything central raises on purpose
    ├── ConfigError             a server setting is invalid; start-up stops before loading
    │                           anything, the message starts with the option's flag
    │                           (``--tls-key is required with --tls-cert``)
    ├── MissingDependencyError  a part needs the ``central`` extra (torch, transformers,
    │                           grpc health and reflection); also an ImportError
    ├── ModelLoadError          a model could not be found, converted or loaded (start-up stops)
    ├── RequestError            a request field is invalid -> INVALID_ARGUMENT; the message
    │                           starts with the field's path (``k: must be between 1 and 64``),
    │                           and edge raises it as ``edge.InvalidRequestError``
    └── LimitError              a request is over a configured limit, or the server cannot take
                                it now -> RESOURCE_EXHAUSTED (UNAVAILABLE while draining or
                                stuck); the message ends with the limit's name
"""

from __future__ import annotations

import importlib

__all__ = [
    "CENTRAL_EXTRA_MODULES",
    "ConfigError",
    "LimitError",
    "MissingDependencyError",
    "ModelLoadError",
    "RequestError",
    "ServiceError",
    "missing_extra",
    "require_extra",
]

# Top-level modules the ``central`` extra installs (and the runtime-only install lacks).
CENTRAL_EXTRA_MODULES = frozenset(
    {"torch", "transformers", "gguf", "accelerate", "safetensors", "grpc_health", "grpc_reflection"}
)


class ServiceError(Exception):
    """Base class of every error the central package raises on purpose."""


class ConfigError(ServiceError):
    """A server setting is invalid; the message starts with the option that sets it."""

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(f"{option} {problem}")
        self.option = option  # the flag, e.g. "--tls-key" (a field name where no flag exists)
        self.problem = problem  # what is wrong, e.g. "is required with --tls-cert"


class MissingDependencyError(ServiceError, ImportError):
    """A part of central needs the ``central`` extra, which is not (fully) installed."""

    def __init__(self, what: str, module: str) -> None:
        self.module = module  # the top-level module that failed to import, e.g. "torch"
        super().__init__(
            f"{what} needs {module}, which is not installed: "
            "pip install 'language-ranker[central]'",
            name=module,
        )


def require_extra(*modules: str, what: str) -> None:
    """Import each module or raise MissingDependencyError naming the ``central`` extra."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise MissingDependencyError(what, module) from error


def missing_extra(error: ImportError) -> str | None:
    """The ``central`` extra's module whose absence caused ``error``, or None.

    None for any other import failure (a bug, a broken install), which should
    surface unchanged rather than as advice to install an extra.
    """
    module = (error.name or "").partition(".")[0]
    return module if module in CENTRAL_EXTRA_MODULES else None


class ModelLoadError(ServiceError):
    """A model could not be found, converted or loaded."""


class RequestError(ServiceError):
    """A request field is invalid; the message starts with the field's path."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field  # dotted path of the offending field, e.g. "sampling.top_p"
        self.problem = problem  # what is wrong with it, e.g. "must be in (0, 1], got 0.0"


class LimitError(ServiceError):
    """A request is over a configured limit; the message ends with the limit's name."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(f"{message} ({limit})")
        self.limit = limit  # the limit's name, e.g. "max_features_bytes"
