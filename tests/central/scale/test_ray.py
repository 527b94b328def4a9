"""Central on a real local Ray cluster: two replicas of the tiny model behind
Ray Serve's gRPC proxy, next to the single-process server on the same model.

One cluster for the module (about 30 s to start on 2 cores): each replica loads
the tiny checkpoint from its directory, as it would load any model. Replicas
take one call at a time (``max_ongoing_requests=1``), so two concurrent calls
are on two different replicas, which the kill test relies on. The cluster is
killed last: the kill test is the last test of the module.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from central.scale import REPLICA_METADATA_KEY, ScaleConfig, ScaledCentral, start_scaled
from central.server import RunningServer, ServerConfig, start_server
from edge import CentralClient, CentralError, Instruction, ServerError
from language_ranker.v1 import ranker_pb2 as pb
from language_ranker.v1 import ranker_pb2_grpc as pb_grpc

pytest.importorskip("ray.serve", reason="the scale extra (ray[serve]) is not installed")
pytestmark = pytest.mark.slow

TOKEN = "scale-test-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
TIMEOUT = 60.0  # seconds per call: a test fails rather than hangs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def scaled(tiny_checkpoint: Path) -> Iterator[ScaledCentral]:
    port = _free_port()
    config = ScaleConfig(
        model=str(tiny_checkpoint),
        replicas=2,
        max_ongoing_requests=1,
        num_cpus=2,
        port=port,
        http_port=_free_port(),
        auth_token=TOKEN,
    )
    # A small object store, and replica logs kept out of the test output.
    ray_init = {"object_store_memory": 80 * 1024 * 1024, "log_to_driver": False}
    # ray.init sets environment variables and a SIGTERM handler in this process;
    # the tests after this module get them back as they were.
    environ, on_sigterm = dict(os.environ), signal.getsignal(signal.SIGTERM)
    running = start_scaled(config, ray_init=ray_init)
    try:
        yield running
    finally:
        running.stop()
        os.environ.clear()
        os.environ.update(environ)
        signal.signal(signal.SIGTERM, on_sigterm)


@pytest.fixture(scope="module")
def single(tiny_model) -> Iterator[RunningServer]:
    """`ranker-central serve` on the same model, in this process: the reference."""
    running = start_server(ServerConfig(port=0, auth_token=TOKEN), loaded=tiny_model)
    yield running
    running.stop(grace=0)


@pytest.fixture(scope="module")
def ray_channel(scaled: ScaledCentral) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{scaled.port}") as channel:
        yield channel


@pytest.fixture(scope="module")
def single_channel(single: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{single.port}") as channel:
        yield channel


def _request(seed: int, k: int = 4, tokens: int = 24) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        prompt=pb.Prompt(text=f"Write a short poem, number {seed}"),
        k=k,
        sampling=pb.SamplingParams(max_new_tokens=tokens, seed=seed),
    )


def _generate(channel: grpc.Channel, request: pb.GenerateRequest) -> tuple[list, str | None]:
    """The stream's responses and the replica that served it (None: not a replica)."""
    call = pb_grpc.CentralServiceStub(channel).Generate(request, timeout=TIMEOUT, metadata=AUTH)
    responses = list(call)
    return responses, dict(call.trailing_metadata() or ()).get(REPLICA_METADATA_KEY)


def _tokens(responses: list[pb.GenerateResponse]) -> dict[int, list[int]]:
    candidates = [r.candidate for r in responses if r.HasField("candidate")]
    return {c.index: list(c.token_ids) for c in candidates}


def test_the_demo_client_works_unchanged_and_answers_as_the_single_server(
    scaled: ScaledCentral, single: RunningServer
) -> None:
    prompt = "Which number is larger, 47 or 74?"
    options = {"temperature": 0.8, "max_new_tokens": 16, "seed": 3, "vectors": ("last", "mean")}
    with (
        CentralClient(f"127.0.0.1:{scaled.port}", token=TOKEN) as ray_client,
        CentralClient(f"127.0.0.1:{single.port}", token=TOKEN) as plain_client,
    ):
        assert ray_client.info() == plain_client.info()
        ours = ray_client.generate(prompt, k=4, **options)  # type: ignore[arg-type]
        theirs = plain_client.generate(prompt, k=4, **options)  # type: ignore[arg-type]
        responses = [c.text for c in theirs.candidates]
        ours_features = ray_client.features(prompt, responses)
        theirs_features = plain_client.features(prompt, responses)
    assert [c.token_ids for c in ours.candidates] == [c.token_ids for c in theirs.candidates]
    assert [c.text for c in ours.candidates] == responses
    assert np.allclose(ours.instruction, theirs.instruction, atol=1e-6)
    for a, b in zip(ours.candidates, theirs.candidates, strict=True):
        assert np.allclose(a.feature, b.feature, atol=1e-6)
        assert a.mean_feature is not None and b.mean_feature is not None
        assert np.allclose(a.mean_feature, b.mean_feature, atol=1e-6)
        assert a.cumulative_logprob == pytest.approx(b.cumulative_logprob, abs=1e-5)
    for a, b in zip(ours_features, theirs_features, strict=True):
        assert np.allclose(a, b, atol=1e-6)
    assert ours.identity == theirs.identity


def test_concurrent_calls_are_spread_over_both_replicas_with_equal_results(
    ray_channel: grpc.Channel, single_channel: grpc.Channel
) -> None:
    seeds = list(range(8))
    with ThreadPoolExecutor(max_workers=8) as pool:
        served = list(pool.map(lambda s: _generate(ray_channel, _request(s)), seeds))
    replicas = {replica for _, replica in served}
    assert len(replicas) == 2 and None not in replicas, replicas
    for seed, (responses, _) in zip(seeds, served, strict=True):
        reference, replica = _generate(single_channel, _request(seed))
        assert replica is None  # the single server names no replica
        assert _tokens(responses) == _tokens(reference), seed
        assert len(_tokens(responses)) == 4
        assert responses[-1].usage.generated_tokens == reference[-1].usage.generated_tokens


def test_statuses_pass_through_the_proxy_unchanged(ray_channel: grpc.Channel) -> None:
    stub = pb_grpc.CentralServiceStub(ray_channel)
    with pytest.raises(grpc.RpcError) as refused:
        list(stub.Generate(pb.GenerateRequest(prompt=pb.Prompt(text="hi"), k=0), metadata=AUTH))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "k: must be between 1 and 64, got 0"
    with pytest.raises(grpc.RpcError) as anonymous:
        stub.Info(pb.InfoRequest(), timeout=TIMEOUT)
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as wrong:
        stub.Info(pb.InfoRequest(), timeout=TIMEOUT, metadata=(("authorization", "Bearer no"),))
    assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_health_is_served_by_a_replica_without_a_token(ray_channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(ray_channel)
    for service in ("", "language_ranker.v1.CentralService"):
        reply, call = health.Check.with_call(
            health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert dict(call.trailing_metadata())[REPLICA_METADATA_KEY].startswith("SERVE_REPLICA")
    with pytest.raises(grpc.RpcError) as unknown:
        health.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=TIMEOUT)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as watch:
        next(health.Watch(health_pb2.HealthCheckRequest(), timeout=TIMEOUT))
    assert watch.value.code() == grpc.StatusCode.UNIMPLEMENTED


def _outside_address() -> str | None:
    """An address of this machine that is not loopback, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET: nothing is sent, a route is chosen
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_callers_from_other_machines_are_refused_without_public(scaled: ScaledCentral) -> None:
    address = _outside_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address")
    with (
        grpc.insecure_channel(f"{address}:{scaled.port}") as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        pb_grpc.CentralServiceStub(channel).Info(pb.InfoRequest(), timeout=TIMEOUT, metadata=AUTH)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "--public" in refused.value.details()


def test_killing_a_replica_mid_load_leaves_the_other_serving(
    scaled: ScaledCentral, ray_channel: grpc.Channel
) -> None:
    import ray

    replicas = sorted(
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["name"].startswith(f"SERVE_REPLICA::{scaled.config.app_name}#")
    )
    assert len(replicas) == 2, replicas
    victim = replicas[0]
    target = f"127.0.0.1:{scaled.port}"
    with (
        CentralClient(target, token=TOKEN, timeout=TIMEOUT) as first,
        CentralClient(target, token=TOKEN, timeout=TIMEOUT) as second,
        ThreadPoolExecutor(max_workers=4) as pool,
    ):
        # Two long calls through the demo's client, one on each replica (each takes
        # one call at a time); their first event (the instruction) proves they started.
        streams = [
            client.stream("Write a long poem", k=16, max_new_tokens=200, seed=seed)
            for client, seed in ((first, 1), (second, 2))
        ]
        assert all(isinstance(next(stream), Instruction) for stream in streams)
        # More load, queued behind them at the proxy.
        queued = [pool.submit(_generate, ray_channel, _request(seed)) for seed in range(20, 24)]
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        outcomes = [_drain(stream) for stream in streams]
        later = [future.result() for future in queued]
    failed = [o for o in outcomes if isinstance(o, Exception)]
    assert len(failed) == 1, outcomes  # the call on the killed replica, with a clear error
    assert isinstance(failed[0], ServerError)
    assert "INTERNAL" in str(failed[0]) and "actor died" in str(failed[0])
    assert victim in str(failed[0])
    finished = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(finished[0]) == 16  # the other call completed: all K candidates
    # The queued calls and later ones are served by the other replica (or by the
    # replacement Ray Serve starts for the dead one), never by the dead one.
    assert all(responses[-1].HasField("usage") for responses, _ in later)
    assert victim not in {replica for _, replica in later}
    for seed in range(3):
        responses, replica = _generate(ray_channel, _request(seed, k=2, tokens=8))
        assert replica not in (victim, None) and responses[-1].HasField("usage")


def _drain(stream: Iterator[object]) -> list[object] | Exception:
    """The rest of an edge stream's events, or the edge error it ended with."""
    try:
        return list(stream)
    except CentralError as error:
        return error
