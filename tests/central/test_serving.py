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


@pytest.fixture(scope="module")
def endless_model(tmp_path_factory: pytest.TempPathFactory):
    """The tiny Llama, never ending a response early: a request lasts max_new_tokens."""
    from central.model import load_model

    from ..conftest import build_tiny_checkpoint

    directory = tmp_path_factory.mktemp("endless-llama")
    return load_model(str(build_tiny_checkpoint(directory, eos_bias=-20.0)))


@contextlib.contextmanager
def _decoder_hook(model, hook, *, after: bool = False) -> Iterator[None]:
    """Runs `hook` on every pass of the model's decoder inside the block (how a test
    slows the real model down, or makes it fail for one request)."""
    decoder = model.model.model
    if after:
        handle = decoder.register_forward_hook(hook, with_kwargs=True)
    else:
        handle = decoder.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def test_every_slot_filled_with_requests_that_die_then_a_normal_call_is_served(
    endless_model,
) -> None:
    from central.prompting import render_prompt

    poison = "this prompt makes the model fail"
    poisoned = render_prompt(endless_model, pb.Prompt(text=poison))
    stuck = threading.Event()  # set: the engine is stuck inside its current pass

    def slow_or_stuck(module, args) -> None:
        time.sleep(0.002)
        while stuck.is_set():
            time.sleep(0.01)

    def nan_for_the_poison(module, args, kwargs, output) -> None:
        if kwargs["input_ids"][0].tolist() == poisoned:  # its prefill
            output.last_hidden_state.fill_(float("nan"))

    engine_config = EngineConfig(max_batch_requests=4, max_queued_requests=4)
    with (
        _decoder_hook(endless_model, slow_or_stuck),
        _decoder_hook(endless_model, nan_for_the_poison, after=True),
        _serve(endless_model, engine=engine_config) as running,
        _channel(running) as channel,
        _channel(running) as hanging_channel,
    ):
        engine = running.servicer.engine
        stub = pb_grpc.CentralServiceStub(channel)
        long = {"k": 2, "tokens": 200}
        # Four running: to be cancelled mid-stream, to pass its deadline, to lose its
        # client, and a temperature of 1e-38 (which used to fail the whole batch with an
        # index error, and to keep its slot for ever).
        cancelled = stub.Generate(_request("cancel me", **long), timeout=60)
        expiring = stub.Generate(_request("deadline", **long), timeout=4)
        hanging = pb_grpc.CentralServiceStub(hanging_channel).Generate(
            _request("hang up", **long), timeout=60
        )
        tiny = _request("tiny temperature", **long)
        tiny.sampling.temperature = 1e-38
        cold = stub.Generate(tiny, timeout=60)
        for call in (cancelled, expiring, hanging, cold):
            assert next(call).WhichOneof("event") == "instruction"
        stuck.set()  # the engine is stuck in a decode step from here on
        # Four queued: to be cancelled, to pass its deadline (a Generate and a Features
        # call), and a prompt the model fails on.
        queued = stub.Generate(_request("queued, cancelled", **long), timeout=60)
        queued_expiring = stub.Generate(_request("deadline while queued"), timeout=3.0)
        features = stub.Features.future(
            pb.FeaturesRequest(
                prompt=pb.Prompt(text="rate"),
                responses=["word " * 40] * 60,
                features=pb.FeatureSpec(mean_entropy=True),
            ),
            timeout=2.0,
        )
        failing = stub.Generate(_request(poison, k=2, tokens=4), timeout=60)
        assert _eventually(lambda: engine.admitted == 8, 2), (engine.admitted, engine.queued)
        with pytest.raises(grpc.RpcError) as full:
            list(stub.Generate(_request(), timeout=10))
        assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        cancelled.cancel()
        queued.cancel()
        hanging_channel.close()
        endings = {}
        for name, call in [("expiring", expiring), ("queued_expiring", queued_expiring)]:
            with pytest.raises(grpc.RpcError) as ended:
                list(call)
            endings[name] = ended.value.code()
        with pytest.raises(grpc.RpcError) as late:
            features.result()
        endings["features"] = late.value.code()
        # Six slots are back while the engine is still stuck inside its pass.
        assert _eventually(lambda: engine.admitted == 2, 5), engine.admitted
        stuck.clear()
        for name, call in [("failing", failing), ("cold", cold)]:
            try:
                endings[name] = list(call)[-1].WhichOneof("event")
            except grpc.RpcError as error:
                endings[name] = error.code()
        assert endings == {
            "expiring": grpc.StatusCode.DEADLINE_EXCEEDED,
            "queued_expiring": grpc.StatusCode.DEADLINE_EXCEEDED,
            "failing": grpc.StatusCode.INTERNAL,
            "cold": "usage",  # served: greedy decoding in all but name
            "features": grpc.StatusCode.DEADLINE_EXCEEDED,
        }
        # Every slot comes back, and the server serves as if nothing had happened.
        assert _eventually(lambda: engine.admitted == 0, 10), engine.admitted
        assert engine.wait_idle(10)
        assert list(stub.Generate(_request(), timeout=20))[-1].WhichOneof("event") == "usage"
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_health_says_not_serving_while_the_engine_is_stuck(tiny_model) -> None:
    gate = threading.Event()

    def hold(module, args) -> None:  # the engine is stuck inside a pass until the gate opens
        gate.wait(30)

    engine_config = EngineConfig(stuck_seconds=1.0)
    with (
        _serve(tiny_model, engine=engine_config) as running,
        _channel(running) as channel,
    ):
        stub = pb_grpc.CentralServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)

        def status() -> int:
            return health.Check(health_pb2.HealthCheckRequest(), timeout=5).status

        try:
            with _decoder_hook(tiny_model, hold):
                with pytest.raises(grpc.RpcError) as stuck:
                    list(stub.Generate(_request(), timeout=30))
                assert stuck.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "no progress" in stuck.value.details()
                assert status() == health_pb2.HealthCheckResponse.NOT_SERVING
                assert running.servicer.engine.admitted == 0
                gate.set()
                assert _eventually(lambda: status() == health_pb2.HealthCheckResponse.SERVING)
        finally:
            gate.set()
        assert list(stub.Generate(_request(), timeout=20))[-1].WhichOneof("event") == "usage"


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
        "limits": ServiceLimits(
            max_request_tokens=300, max_prompt_bytes=1000, max_features_bytes=1000
        ),
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
        too_long = pb.FeaturesRequest(prompt=pb.Prompt(text="hi"), responses=["x" * 2000])
        with pytest.raises(grpc.RpcError) as refused:
            stub.Features(too_long, timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_features_bytes" in refused.value.details()
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


@pytest.mark.slow  # the real default model in a server process; CI runs it
def test_sigterm_with_long_work_in_flight_exits_0_within_a_bounded_time() -> None:
    # One Features response of ~6,000 tokens with mean entropy: minutes of work. Before,
    # it was one uninterruptible pass: the engine thread was still inside torch when the
    # interpreter finalised, and the process died of SIGABRT ("terminate called without
    # an active exception", status -6) 15 s after the grace period began.
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "central.cli", "serve"),
            *("--model", "default", "--port", "0", "--threads", "1"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    output: list[str] = []
    try:
        line = ""
        while not line.startswith("ranker-central: serving"):
            line = process.stdout.readline()
            assert line or process.poll() is None, "server exited before serving"
        port = int(line.rsplit(":", 1)[1])
        reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
        reader.start()
        ended: list[grpc.StatusCode] = []

        def long_features() -> None:
            request = pb.FeaturesRequest(
                prompt=pb.Prompt(text="Rate this"),
                responses=["word " * 6000],
                features=pb.FeatureSpec(mean_entropy=True),
            )
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                try:
                    pb_grpc.CentralServiceStub(channel).Features(request, timeout=300)
                except grpc.RpcError as error:
                    ended.append(error.code())

        caller = threading.Thread(target=long_features)
        caller.start()
        time.sleep(3)  # the engine is inside the long work
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=120)
        took = time.monotonic() - signalled
        caller.join(timeout=30)
        reader.join(timeout=5)
        assert status == 0, "".join(output[-20:])
        assert "terminate called" not in "".join(output)
        assert took < 5 + 30  # the grace period, then one bounded piece of work
        assert ended == [grpc.StatusCode.UNAVAILABLE]
    finally:
        if process.poll() is None:
            process.kill()
