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
import re
from dataclasses import dataclass
from typing import Any

from .._errors import ServiceError
from .._signals import stop_requested, wait_for_stop
from .config import ScaleConfig, exposure_warning, validate_scale_config
from .deployment import CentralReplica

__all__ = [
    "SERVICER_FUNCTIONS",
    "DeploymentError",
    "ScaledCentral",
    "build_app",
    "last_error",
    "serve_forever",
    "start_scaled",
]

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


class DeploymentError(ServiceError):
    """The replicas could not start (the model failed to load on a node, say)."""


def last_error(traceback: str) -> str:
    """The final ``module.Error: message`` of a traceback Ray recorded, to its end."""
    lines = traceback.rstrip().splitlines()
    for at in range(len(lines) - 1, -1, -1):
        if _ERROR_LINE.match(lines[at]):
            return "\n".join(lines[at:])
    return lines[-1] if lines else ""


_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt): ")


def _failure(app_name: str) -> str | None:
    """Why the deployment failed, from Serve's status: the replica's own exception."""
    from ray import serve

    try:
        deployments = serve.status().applications[app_name].deployments
    except Exception:  # no status to read: the caller keeps Ray's message
        return None
    for deployment in deployments.values():
        if deployment.message:
            return f"replicas failed to start: {last_error(deployment.message)}"
    return None


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
    the object store with it). Raises `ConfigError` before anything starts,
    `DeploymentError` when the replicas cannot start (the model failed to load
    on a node) or Serve already runs on the cluster with other gRPC settings.
    """
    import ray

    config = validate_scale_config(config)
    if (exposure := exposure_warning(config)) is not None:
        log.warning("EXPOSED: %s", exposure)
    started_ray = _connect(config, ray_init or {})
    try:
        _start_serve(config)
        _deploy(config)
    except BaseException:
        if started_ray:
            ray.shutdown()
        raise
    return ScaledCentral(config=config, port=config.port, started_ray=started_ray)


def _connect(config: ScaleConfig, ray_init: dict[str, Any]) -> bool:
    """Joins ``config.address`` or starts a local cluster; True when this process started it."""
    import ray

    if ray.is_initialized():
        return False
    if config.address is not None:
        ray.init(address=config.address, **ray_init)
        return False
    ray.init(num_cpus=config.num_cpus, include_dashboard=False, **ray_init)
    return True


def _start_serve(config: ScaleConfig) -> None:
    """Starts Serve with central's gRPC servicers, or checks the running Serve has them.

    Serve's proxy options are fixed when Serve first starts on a cluster; a
    Serve started earlier without them would leave central unreachable.
    """
    import ray
    from ray import serve
    from ray.serve.context import _get_global_client

    serve.start(
        proxy_location=config.proxy_location,
        http_options={"host": "127.0.0.1", "port": config.http_port},
        grpc_options={
            "port": config.port,
            "grpc_servicer_functions": SERVICER_FUNCTIONS,
            "request_timeout_s": config.request_timeout_s,
        },
    )
    try:  # a private handle, so only a check: a Ray without it skips the check
        controller = _get_global_client()._controller  # type: ignore[union-attr]
        running = ray.get(controller.get_grpc_config.remote())
    except Exception:
        return
    missing = set(SERVICER_FUNCTIONS) - set(running.grpc_servicer_functions)
    if running.port != config.port or missing:
        raise DeploymentError(
            f"Ray Serve already runs on this cluster with gRPC port {running.port} and "
            f"servicers {running.grpc_servicer_functions}; central needs port {config.port} "
            f"and {SERVICER_FUNCTIONS}: stop it first (`serve shutdown`) or pass "
            f"--port {running.port} if only the port differs"
        )


def _deploy(config: ScaleConfig) -> None:
    """Runs the application and waits for its replicas; a failure says why, not just that."""
    from ray import serve

    try:
        serve.run(build_app(config), name=config.app_name, route_prefix=f"/{config.app_name}")
    except RuntimeError as error:  # Ray says only "Deploying application ... failed"
        reason = _failure(config.app_name) or str(error)
        serve.delete(config.app_name)  # a failed app would keep retrying on a shared cluster
        raise DeploymentError(reason) from error


def serve_forever(config: ScaleConfig) -> None:
    """Runs until SIGTERM or SIGINT, then removes the deployment."""
    running = start_scaled(config)
    stopping = stop_requested()
    c = running.config
    replicas = f"{c.replicas}..{c.max_replicas}" if c.autoscaling else str(c.replicas)
    print(
        f"ranker-central-scale: serving {c.model} with {replicas} replica(s) on port "
        f"{running.port} (every node with a proxy)",
        flush=True,
    )
    wait_for_stop(stopping)
    running.stop()
