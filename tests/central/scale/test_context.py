"""The replica side without a cluster: Ray's call context as the servicer needs
it, who may call, and the real servicer driven from an event loop.

`ProxyContext` stands in for `ray.serve.grpc_util.RayServegRPCContext` (the
picklable snapshot of the proxy's call Ray hands a deployment), with the same
methods and the same trailing-metadata rule; the servicer, the model and the
threads are real. The end-to-end checks through Ray are in test_ray.py.
"""

from __future__ import annotations

import asyncio
import pickle
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from central.scale.bridge import run_stream, run_unary
from central.scale.context import REPLICA_METADATA_KEY, CallAborted, ReplicaCallContext
from central.scale.deployment import CallGate, peer_host
from language_ranker.v1 import ranker_pb2 as pb


class ProxyContext:
    """What Ray Serve's gRPC context holds for one call (see the module docstring)."""

    def __init__(self, peer: str = "ipv4:127.0.0.1:40000", metadata: tuple = ()) -> None:
        self._peer = peer
        self._metadata = [("request_id", "r-1"), *metadata]
        self._code: grpc.StatusCode | None = None
        self._details: str | None = None
        self.trailing: list[tuple[str, str]] = [("request_id", "r-1")]

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return list(self._metadata)

    def peer(self) -> str:
        return self._peer

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str | None:
        return self._details

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def set_trailing_metadata(self, trailing_metadata: list[tuple[str, str]]) -> None:
        # Ray keeps its request_id in front of whatever the deployment sets.
        self.trailing = [("request_id", "r-1"), *trailing_metadata]


def _call(**kwargs: object) -> tuple[ProxyContext, ReplicaCallContext]:
    ray = ProxyContext(**kwargs)  # type: ignore[arg-type]
    return ray, ReplicaCallContext(ray, "replica-a")


def test_every_call_names_its_replica_next_to_the_servicers_metadata() -> None:
    ray, call = _call()
    assert dict(ray.trailing) == {"request_id": "r-1", REPLICA_METADATA_KEY: "replica-a"}
    call.set_trailing_metadata((("x-extra", "1"), (REPLICA_METADATA_KEY, "forged")))
    assert ray.trailing == [
        ("request_id", "r-1"),
        ("x-extra", "1"),
        (REPLICA_METADATA_KEY, "replica-a"),
    ]


def test_abort_records_the_status_for_the_proxy_and_raises_a_picklable_error() -> None:
    ray, call = _call()
    with pytest.raises(CallAborted) as caught:
        call.abort(grpc.StatusCode.INVALID_ARGUMENT, "k: must be between 1 and 64, got 0")
    assert ray.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ray.details() == "k: must be between 1 and 64, got 0"
    copy = pickle.loads(pickle.dumps(caught.value))  # Ray ships it to the proxy
    assert (copy.code, copy.details) == (caught.value.code, caught.value.details)


def test_callbacks_run_once_when_the_call_ends_and_not_after() -> None:
    _, call = _call()
    ran: list[str] = []
    assert call.add_callback(lambda: ran.append("a"))
    assert call.add_callback(lambda: 1 / 0)  # a failing callback does not stop the others
    assert call.add_callback(lambda: ran.append("b"))
    assert call.is_active() and call.time_remaining() is None
    call.cancel()
    assert not call.is_active()
    call.end()
    call.end()
    assert ran == ["a", "b"]
    assert not call.add_callback(lambda: ran.append("late"))
    assert ran == ["a", "b"]


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:127.0.0.1:5000", "127.0.0.1"),
        ("ipv4:10.1.2.3:5000", "10.1.2.3"),
        ("ipv6:[::1]:5000", "::1"),
        ("ipv6:%5B::1%5D:5000", "::1"),
        ("ipv6:[::ffff:127.0.0.1]:5000", "127.0.0.1"),
        ("ipv6:[2001:db8::7]:5000", "2001:db8::7"),
        ("unix:/tmp/socket", ""),
    ],
)
def test_peer_host(peer: str, host: str) -> None:
    assert peer_host(peer) == host


def _gate_code(gate: CallGate, health: bool = False, **kwargs: object) -> grpc.StatusCode | None:
    ray, call = _call(**kwargs)
    try:
        gate.check(call, health=health)
    except CallAborted as aborted:
        assert ray.code() == aborted.code
        return aborted.code
    return None


def test_the_gate_admits_this_machine_only_unless_public() -> None:
    private, public = CallGate(None, public=False), CallGate(None, public=True)
    remote = "ipv4:10.1.2.3:5000"
    assert _gate_code(private) is None
    assert _gate_code(private, peer="ipv6:[::1]:5000") is None
    assert _gate_code(private, peer=remote) == grpc.StatusCode.PERMISSION_DENIED
    assert _gate_code(private, peer=remote, health=True) == grpc.StatusCode.PERMISSION_DENIED
    assert _gate_code(public, peer=remote) is None


def test_the_gate_wants_the_bearer_token_except_for_health_checks() -> None:
    gate = CallGate("s3cret", public=True)
    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    assert _gate_code(gate) == unauthenticated
    assert _gate_code(gate, metadata=(("authorization", "Bearer wrong"),)) == unauthenticated
    assert _gate_code(gate, metadata=(("authorization", "Basic s3cret"),)) == unauthenticated
    assert _gate_code(gate, metadata=(("authorization", "bearer  s3cret "),)) is None
    assert _gate_code(gate, health=True) is None


# The real servicer on the tiny model, driven as the replica drives it.

REQUEST = pb.GenerateRequest(
    prompt=pb.Prompt(text="Write a short poem"),
    k=3,
    sampling=pb.SamplingParams(max_new_tokens=12, seed=5),
)


@pytest.fixture(scope="module")
def servicer(tiny_model):
    from central.service import CentralServicer

    servicer = CentralServicer(tiny_model)
    yield servicer
    close = getattr(servicer, "close", None)
    if close is not None:
        close()


@pytest.fixture()
def pool():
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield pool


async def _drain(stream: AsyncIterator[pb.GenerateResponse]) -> list[pb.GenerateResponse]:
    return [response async for response in stream]


def test_a_stream_relayed_from_a_worker_thread_is_the_servicers_stream(servicer, pool) -> None:
    ray, call = _call()
    ended = threading.Event()
    call.add_callback(ended.set)
    responses = asyncio.run(_drain(run_stream(pool, servicer.Generate, REQUEST, call)))
    kinds = [r.WhichOneof("event") for r in responses]
    assert kinds == ["instruction", "candidate", "candidate", "candidate", "usage"]
    assert sorted(r.candidate.index for r in responses[1:4]) == [0, 1, 2]
    assert ended.is_set() and dict(ray.trailing)[REPLICA_METADATA_KEY] == "replica-a"


def test_a_refused_stream_raises_with_its_status_on_the_proxys_context(servicer, pool) -> None:
    ray, call = _call()
    bad = pb.GenerateRequest(prompt=pb.Prompt(text="hi"), k=0)
    with pytest.raises(CallAborted, match="k: must be between 1"):
        asyncio.run(_drain(run_stream(pool, servicer.Generate, bad, call)))
    assert ray.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_closing_the_stream_early_stops_the_servicers_work(servicer) -> None:
    long = pb.GenerateRequest(
        prompt=pb.Prompt(text="Write a short poem"),
        k=8,
        sampling=pb.SamplingParams(max_new_tokens=200, seed=1),
    )
    _, call = _call()
    ended = threading.Event()
    call.add_callback(ended.set)
    produced: list[str | None] = []

    def recorded(request: pb.GenerateRequest, context: ReplicaCallContext):
        for response in servicer.Generate(request, context):
            produced.append(response.WhichOneof("event"))
            yield response

    async def first_then_close(pool: ThreadPoolExecutor) -> pb.GenerateResponse:
        stream = run_stream(pool, recorded, long, call)
        first = await anext(stream)
        await stream.aclose()  # what Ray does when the client goes away
        return first

    with ThreadPoolExecutor(max_workers=1) as pool:
        first = asyncio.run(first_then_close(pool))
    # The pool has shut down: the worker has returned, and the servicer never
    # reached the end of the stream (Usage), which needs every response generated.
    assert first.WhichOneof("event") == "instruction"
    assert not call.is_active() and ended.is_set()
    assert "usage" not in produced and produced.count("candidate") < 8


def test_a_unary_call_runs_on_a_worker_thread(servicer, pool) -> None:
    _, call = _call()
    seen: list[str] = []

    def info(request: pb.InfoRequest, context: ReplicaCallContext) -> pb.InfoResponse:
        seen.append(threading.current_thread().name)
        return servicer.Info(request, context)

    reply = asyncio.run(run_unary(pool, info, pb.InfoRequest(), call))
    assert reply.num_layers == 4 and seen and seen[0] != threading.main_thread().name
