"""The central feature service: runs the base LLM, samples K candidates and
streams each with a compact hidden-state feature over gRPC.

Typical use is the `ranker-central serve` command; embedding it::

    from central import ServerConfig, start_server
    running = start_server(ServerConfig(model="default", port=0))
    ...
    running.stop()

Serving needs the ``central`` extra (torch, transformers, ...). ``import
central`` does not: the errors and the configuration (`ServerConfig`,
`validate_config`) load eagerly and torch-free, everything else on first use
(PEP 562), where a missing extra raises `MissingDependencyError` saying
``pip install 'language-ranker[central]'``. That keeps ``ranker-central
--help`` and flag checking working in a runtime-only install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import (
    ConfigError,
    LimitError,
    MissingDependencyError,
    ModelLoadError,
    RequestError,
    ServiceError,
    missing_extra,
)
from .config import ServerConfig, ServiceLimits, validate_config

if TYPE_CHECKING:
    from .features import DEFAULT_LAYER_FRACTION, encode, resolve_layer
    from .model import DEFAULT_MODEL, EMBEDDED_MODELS, LoadedModel, load_model
    from .sampler import SampledCandidate, SamplingConfig, sample
    from .server import RunningServer, start_server
    from .service import CentralServicer

# Loaded on first access: name -> module that defines it.
_LAZY = {
    "DEFAULT_LAYER_FRACTION": "central.features",
    "encode": "central.features",
    "resolve_layer": "central.features",
    "DEFAULT_MODEL": "central.model",
    "EMBEDDED_MODELS": "central.model",
    "LoadedModel": "central.model",
    "load_model": "central.model",
    "SampledCandidate": "central.sampler",
    "SamplingConfig": "central.sampler",
    "sample": "central.sampler",
    "RunningServer": "central.server",
    "start_server": "central.server",
    "CentralServicer": "central.service",
}

__all__ = [
    "DEFAULT_LAYER_FRACTION",
    "DEFAULT_MODEL",
    "EMBEDDED_MODELS",
    "CentralServicer",
    "ConfigError",
    "LimitError",
    "LoadedModel",
    "MissingDependencyError",
    "ModelLoadError",
    "RequestError",
    "RunningServer",
    "SampledCandidate",
    "SamplingConfig",
    "ServerConfig",
    "ServiceError",
    "ServiceLimits",
    "encode",
    "load_model",
    "resolve_layer",
    "sample",
    "start_server",
    "validate_config",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'central' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(module), name)
    except ImportError as error:
        missing = missing_extra(error)
        if isinstance(error, MissingDependencyError) or missing is None:
            raise
        raise MissingDependencyError(f"central.{name}", missing) from error
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
