"""Starting central on Ray Serve: the cluster, the proxy, the replicas.

`start_scaled` joins a Ray cluster (or starts a local one), starts Ray Serve
with its gRPC proxy serving central's `.proto` and the standard health
service, and runs the `CentralReplica` deployment with the replicas,
resources and autoscaling bounds of a `ScaleConfig`. A client talks to the
proxy exactly as it talks to `ranker-central serve`; when the proxy serves a
single application it needs no routing metadata (with several, it sends
``application: <app_name>``).
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from typing import Any

from .config import ScaleConfig, exposure_warning, validate_scale_config
from .deployment import CentralReplica

__all__ = ["SERVICER_FUNCTIONS", "ScaledCentral", "build_app", "serve_forever", "start_scaled"]

log = logging.getLogger(__name__)

# The servicers the proxy serves (import paths, as Ray Serve takes them).
SERVICER_FUNCTIONS = [
    "language_ranker.v1.ranker_pb2_grpc.add_CentralServiceServicer_to_server",
    "grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server",
]


def build_app(config: ScaleConfig) -> Any:
    """The Ray Serve application: `CentralReplica` with the config's replicas and resources."""
    from ray import serve

    scaling: dict[str, Any]
    if config.autoscaling:
        scaling = {
            "autoscaling_config": {
                "min_replicas": config.replicas,
                "initial_replicas": config.replicas,
                "max_replicas": config.max_replicas,
                "target_ongoing_requests": config.target_ongoing_requests,
            }
        }
    else:
        scaling = {"num_replicas": config.replicas}
    deployment = serve.deployment(
        name="CentralReplica",
        max_ongoing_requests=config.max_ongoing_requests,
        ray_actor_options={
            "num_cpus": config.cpus_per_replica,
            "num_gpus": config.gpus_per_replica,
        },
        **scaling,
    )(CentralReplica)
    return deployment.bind(config)


@dataclass
class ScaledCentral:
    """A running deployment; `stop()` removes it, and the Ray it started, if any."""

    config: ScaleConfig  # as validated (token resolved)
    port: int  # the gRPC proxy's port
    started_ray: bool  # this process started Ray (a local cluster), so stopping ends it

    def stop(self) -> None:
        """Deletes the application, shuts Serve down, and ends a Ray this process started."""
        import ray
        from ray import serve

        try:
            serve.delete(self.config.app_name)
            serve.shutdown()
        finally:
            if self.started_ray:
                ray.shutdown()


def start_scaled(config: ScaleConfig, ray_init: dict[str, Any] | None = None) -> ScaledCentral:
    """Checks the config, brings up Ray and Serve, deploys, and waits until replicas serve.

    ``ray_init`` adds keyword arguments for a local ``ray.init`` (tests bound
    the object store with it). Raises `ConfigError` before anything starts.
    """
    import ray
    from ray import serve

    config = validate_scale_config(config)
    if (exposure := exposure_warning(config)) is not None:
        log.warning("EXPOSED: %s", exposure)
    started_ray = False
    if not ray.is_initialized():
        if config.address is None:
            ray.init(num_cpus=config.num_cpus, include_dashboard=False, **(ray_init or {}))
            started_ray = True
        else:
            ray.init(address=config.address, **(ray_init or {}))
    try:
        serve.start(
            proxy_location=config.proxy_location,
            http_options={"host": "127.0.0.1", "port": config.http_port},
            grpc_options={
                "port": config.port,
                "grpc_servicer_functions": SERVICER_FUNCTIONS,
                "request_timeout_s": config.request_timeout_s,
            },
        )
        serve.run(build_app(config), name=config.app_name, route_prefix=f"/{config.app_name}")
    except BaseException:
        if started_ray:
            ray.shutdown()
        raise
    return ScaledCentral(config=config, port=config.port, started_ray=started_ray)


def serve_forever(config: ScaleConfig) -> None:
    """Runs until SIGTERM or SIGINT, then removes the deployment."""
    running = start_scaled(config)
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    c = running.config
    replicas = f"{c.replicas}..{c.max_replicas}" if c.autoscaling else str(c.replicas)
    print(
        f"ranker-central-scale: serving {c.model} with {replicas} replica(s) on port "
        f"{running.port} (every node with a proxy)",
        flush=True,
    )
    stopping.wait()
    running.stop()
