"""Central on Ray Serve: many replicas of the service behind one gRPC endpoint.

Each replica is a Ray Serve replica that loads the model and runs the same
`CentralServicer` as ``ranker-central serve``; Ray Serve's gRPC proxy serves
central's `.proto` (and grpc.health.v1) on every node that runs a proxy,
spreads calls over the replicas, and scales them between bounds on queued
calls. Clients do not change: ``edge.CentralClient("head:50051")`` works as
against a single server. One command starts it::

    ranker-central-scale --replicas 2                  # a local Ray cluster
    ranker-central-scale --address auto --replicas 4 --public --token-file token

The pieces: `ScaleConfig` (checked before anything starts), `CentralReplica`
(the deployment), `ReplicaCallContext` (Ray's call context as the servicer
expects it), `start_scaled` (cluster, proxy, deployment). Nothing here imports
Ray until a cluster is started, so flag checking works without the ``scale``
extra; docs/scale-out.md says what to type on each machine.
"""

from __future__ import annotations

from .app import (
    SERVICER_FUNCTIONS,
    DeploymentError,
    ScaledCentral,
    build_app,
    last_error,
    serve_forever,
    start_scaled,
)
from .bridge import run_stream, run_unary
from .config import PROXY_LOCATIONS, ScaleConfig, exposure_warning, validate_scale_config
from .context import REPLICA_METADATA_KEY, CallAborted, RayContext, ReplicaCallContext
from .deployment import SERVICE_NAME, CallGate, CentralReplica, peer_host

__all__ = [
    "PROXY_LOCATIONS",
    "REPLICA_METADATA_KEY",
    "SERVICER_FUNCTIONS",
    "SERVICE_NAME",
    "CallAborted",
    "CallGate",
    "CentralReplica",
    "DeploymentError",
    "RayContext",
    "ReplicaCallContext",
    "ScaleConfig",
    "ScaledCentral",
    "build_app",
    "exposure_warning",
    "last_error",
    "peer_host",
    "run_stream",
    "run_unary",
    "serve_forever",
    "start_scaled",
    "validate_scale_config",
]
