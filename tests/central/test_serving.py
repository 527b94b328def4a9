"""The engine behind a real gRPC server: no client can stall the others.

Stalled readers, cancel storms, limits, malformed bytes, health under load
and draining on SIGTERM, each over a real socket.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from central.config import EngineConfig, ServiceLimits
from central.server import ServerConfig, start_server
from language_ranker.v1 import ranker_pb2 as pb
from language_ranker.v1 import ranker_pb2_grpc as pb_grpc

GENERATE = "/language_ranker.v1.CentralService/Generate"


@contextlib.contextmanager
def _serve(model, **settings) -> Iterator:
    running = start_server(ServerConfig(port=0, **settings), loaded=model)
    try:
        yield running
    finally:
        running.stop(grace=0)


@pytest.fixture()
def server(tiny_model) -> Iterator:
    with _serve(tiny_model) as running:
        yield running


def _channel(running) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{running.port}")


def _request(text: str = "hi", k: int = 2, tokens: int = 6, **extra) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        prompt=pb.Prompt(text=text),
        k=k,
        sampling=pb.SamplingParams(max_new_tokens=tokens, seed=3),
        **extra,
    )


def _eventually(condition, seconds: float = 15.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory: pytest.TempPathFactory):
    """A 512-wide tiny Llama that never ends early: its per-token features of every
    layer (10 KB a token) outgrow what gRPC buffers for a client that does not read."""
    from central.model import load_model

    from ..conftest import build_tiny_checkpoint

    directory = tmp_path_factory.mktemp("wide-llama")
    return load_model(str(build_tiny_checkpoint(directory, eos_bias=-20.0, hidden_size=512)))


@pytest.mark.slow  # ~10 s: tens of MB must pile up before gRPC stops taking them
def test_a_stalled_reader_is_cancelled_and_does_not_hold_up_others(wide_model) -> None:
    heavy = _request(
        "Write a long story",
        k=32,
        tokens=200,
        token_features=pb.TokenFeatureSpec(enabled=True, all_layers=True, encoding=2),
    )
    stall = EngineConfig(stall_seconds=1.5)
    with (
        _serve(wide_model, engine=stall) as server,
        _channel(server) as stalled_channel,
        _channel(server) as channel,
    ):
        stalled = pb_grpc.CentralServiceStub(stalled_channel).Generate(heavy)
        assert next(stalled).WhichOneof("event") == "instruction"  # then never read again
        stub = pb_grpc.CentralServiceStub(channel)
        quick = _request(k=2, tokens=4)
        give_up = time.monotonic() + 60
        while server.servicer.engine.admitted:  # others are served all along
            replies = list(stub.Generate(quick, timeout=20))
            assert replies[-1].WhichOneof("event") == "usage"
            assert time.monotonic() < give_up, "the stalled call was never cancelled"
        # The stalled call was cancelled once it had not read for stall_seconds.
        with pytest.raises(grpc.RpcError) as ended:
            list(stalled)
        assert ended.value.code() == grpc.StatusCode.CANCELLED


def test_a_cancel_storm_leaves_the_engine_idle_and_serving(server) -> None:
    with _channel(server) as channel:
        stub = pb_grpc.CentralServiceStub(channel)
        calls = [stub.Generate(_request(k=8, tokens=100), timeout=30) for _ in range(24)]
        for i, call in enumerate(calls):
            if i % 2:
                next(call)  # some have started streaming, some are still queued
            call.cancel()
        assert server.servicer.engine.wait_idle(15)
        assert server.servicer.engine.rows_in_flight == 0
        replies = list(stub.Generate(_request(), timeout=20))
        assert replies[-1].WhichOneof("event") == "usage"


def test_limits_answer_resource_exhausted_naming_the_limit(tiny_model) -> None:
    settings = {
        "limits": ServiceLimits(max_request_tokens=300, max_prompt_bytes=1000),
        # One request at a time, one waiting, and a request whose client does not read
        # holds its place (its per-token features wait for room).
        "engine": EngineConfig(max_batch_requests=1, max_queued_requests=1, max_buffered_bytes=1),
    }
    with _serve(tiny_model, **settings) as running, _channel(running) as channel:
        stub = pb_grpc.CentralServiceStub(channel)
        cases = {
            "max_request_tokens": _request(k=8, tokens=40),
            "max_prompt_bytes": _request(text="x" * 2000),
        }
        for limit, request in cases.items():
            with pytest.raises(grpc.RpcError) as refused:
                list(stub.Generate(request, timeout=10))
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert limit in refused.value.details()
        unread = _request(k=4, tokens=20, token_features=pb.TokenFeatureSpec(enabled=True))
        holding = stub.Generate(unread, timeout=30)
        next(holding)
        waiting = stub.Generate(_request(), timeout=30)
        engine = running.servicer.engine
        assert _eventually(lambda: engine.admitted == 2)
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.Generate(_request(), timeout=10))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_queued_requests" in refused.value.details()
        holding.cancel()
        assert list(waiting)[-1].WhichOneof("event") == "usage"


def test_malformed_bytes_get_invalid_argument_and_one_log_line(server, caplog) -> None:
    caplog.set_level(logging.INFO)
    with _channel(server) as channel:
        raw = channel.unary_stream(GENERATE)  # no serializers: bytes go out as they are
        with pytest.raises(grpc.RpcError) as refused:
            list(raw(b"\x0a\xff\xff\xff\xff\x0f", timeout=10))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "language_ranker.v1.GenerateRequest" in refused.value.details()
        replies = list(pb_grpc.CentralServiceStub(channel).Generate(_request(), timeout=20))
        assert replies[-1].WhichOneof("event") == "usage"
    malformed = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(malformed) == 1
    assert not any(r.exc_info for r in caplog.records)


def test_health_and_info_answer_while_the_engine_is_saturated(server) -> None:
    with _channel(server) as channel:
        stub = pb_grpc.CentralServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        calls = [stub.Generate(_request(k=16, tokens=120), timeout=60) for _ in range(12)]
        readers = [threading.Thread(target=_read_quietly, args=(c,)) for c in calls]
        for reader in readers:
            reader.start()
        try:
            time.sleep(0.3)
            for _ in range(10):
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
                assert stub.Info(pb.InfoRequest(), timeout=2).hidden_size == 64
        finally:
            for call in calls:
                call.cancel()
            for reader in readers:
                reader.join(timeout=10)


def _read_quietly(call) -> None:
    with contextlib.suppress(grpc.RpcError):  # cancelled by the test
        list(call)


@pytest.mark.slow  # starts a server process; CI runs it
def test_sigterm_drains_in_flight_work_refuses_new_and_exits(tmp_path: Path) -> None:
    from ..conftest import build_tiny_checkpoint

    never_ends = build_tiny_checkpoint(tmp_path, eos_bias=-20.0)  # the drain takes a while
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "central.cli", "serve"),
            *("--model", str(never_ends), "--port", "0", "--threads", "1"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = ""
        while "serving" not in line:
            line = process.stdout.readline()
            assert line or process.poll() is None, "server exited before serving"
        port = int(line.rsplit(":", 1)[1])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.CentralServiceStub(channel)
            in_flight = stub.Generate(_request(k=16, tokens=200), timeout=60)
            assert next(in_flight).WhichOneof("event") == "instruction"
            process.send_signal(signal.SIGTERM)
            health = health_pb2_grpc.HealthStub(channel)
            draining = health_pb2.HealthCheckResponse.NOT_SERVING
            assert _eventually(
                lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == draining
            )
            with pytest.raises(grpc.RpcError) as refused:
                list(stub.Generate(_request(), timeout=5))
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            rest = list(in_flight)  # drained: it finishes within the 5 s grace period
            assert rest[-1].WhichOneof("event") == "usage"
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
