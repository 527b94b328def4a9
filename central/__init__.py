"""The central feature service: runs the base LLM, samples K candidates and
streams each with a compact hidden-state feature over gRPC.

Typical use is the `ranker-central serve` command; embedding it::

    from central import ServerConfig, start_server
    running = start_server(ServerConfig(model="default", port=0))
    ...
    running.stop()
"""

from __future__ import annotations

from ._errors import ModelLoadError, RequestError, ServiceError
from .features import DEFAULT_LAYER_FRACTION, encode, resolve_layer
from .model import DEFAULT_MODEL, EMBEDDED_MODELS, LoadedModel, load_model
from .sampler import SampledCandidate, SamplingConfig, sample
from .server import RunningServer, ServerConfig, start_server
from .service import CentralServicer
from .validation import ServiceLimits

__all__ = [
    "DEFAULT_LAYER_FRACTION",
    "DEFAULT_MODEL",
    "EMBEDDED_MODELS",
    "CentralServicer",
    "LoadedModel",
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
]
