"""Process-level behaviour: health, reflection (v1alpha and v1), auth, TLS,
fail-closed binding, limits, deadlines, cancellation and graceful shutdown,
each over a real socket."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from central._errors import ConfigError
from central.server import ServerConfig, start_server
from language_ranker.v1 import ranker_pb2 as pb
from language_ranker.v1 import ranker_pb2_grpc as pb_grpc

from .certs import self_signed

_self_signed = self_signed  # the name tests elsewhere (edge, examples) import from here

LONG = pb.SamplingParams(max_new_tokens=200, seed=0)


def test_health_reports_serving(tiny_server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{tiny_server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "language_ranker.v1.CentralService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_service(tiny_server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{tiny_server.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        reply = next(stub.ServerReflectionInfo(iter([request]), timeout=5))
        names = {s.name for s in reply.list_services_response.service}
        assert "language_ranker.v1.CentralService" in names
        assert "grpc.health.v1.Health" in names


def test_binds_loopback_by_default() -> None:
    assert ServerConfig().host == "127.0.0.1"


@pytest.fixture()
def own_server(tiny_model, request) -> Iterator:
    running = start_server(ServerConfig(port=0, **getattr(request, "param", {})), loaded=tiny_model)
    yield running
    running.stop(grace=0)


@pytest.mark.parametrize("own_server", [{"auth_token": "s3cret"}], indirect=True)
def test_bearer_token_is_required_except_for_health(own_server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{own_server.port}") as channel:
        stub = pb_grpc.CentralServiceStub(channel)
        for metadata in (None, [("authorization", "Bearer wrong")]):
            with pytest.raises(grpc.RpcError) as raised:
                stub.Info(pb.InfoRequest(), timeout=5, metadata=metadata)
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as raised:
            list(stub.Generate(pb.GenerateRequest(prompt=pb.Prompt(text="hi"), k=1), timeout=5))
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        info = stub.Info(pb.InfoRequest(), timeout=5, metadata=[("authorization", "Bearer s3cret")])
        assert info.hidden_size == 64
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_tls_serves_encrypted_and_refuses_plaintext(tiny_model, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    running = start_server(ServerConfig(port=0, tls_cert=cert, tls_key=key), loaded=tiny_model)
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(f"localhost:{running.port}", credentials) as channel:
            info = pb_grpc.CentralServiceStub(channel).Info(pb.InfoRequest(), timeout=10)
            assert info.hidden_size == 64
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            with pytest.raises(grpc.RpcError) as raised:
                pb_grpc.CentralServiceStub(channel).Info(pb.InfoRequest(), timeout=3)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop(grace=0)


@pytest.mark.parametrize("own_server", [{"max_receive_bytes": 1024}], indirect=True)
def test_oversized_request_is_refused_and_server_keeps_serving(own_server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{own_server.port}") as channel:
        stub = pb_grpc.CentralServiceStub(channel)
        big = pb.FeaturesRequest(prompt=pb.Prompt(text="hi"), responses=["x" * 2000])
        with pytest.raises(grpc.RpcError) as raised:
            stub.Features(big, timeout=5)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub.Info(pb.InfoRequest(), timeout=5).hidden_size == 64


@pytest.mark.parametrize("own_server", [{"auth_token": "s3cret"}], indirect=True)
def test_bearer_scheme_is_case_insensitive(own_server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{own_server.port}") as channel:
        stub = pb_grpc.CentralServiceStub(channel)
        for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
            sent = [("authorization", f"{scheme} s3cret")]
            assert stub.Info(pb.InfoRequest(), timeout=5, metadata=sent).hidden_size == 64
        # The scheme is still required, and only the right token passes.
        for value in ("s3cret", "Basic s3cret", "Bearers3cret", "bearer s3cre", "bearer s3cretX"):
            with pytest.raises(grpc.RpcError) as raised:
                stub.Info(pb.InfoRequest(), timeout=5, metadata=[("authorization", value)])
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED, value


# A v1 reflection client written from the v1 protocol (grpc/reflection/v1/reflection.proto),
# not derived from grpcio-reflection's v1alpha module: the messages this test needs.
REFLECTION_V1_PROTO = """
syntax = "proto3";
package grpc.reflection.v1;

service ServerReflection {
  rpc ServerReflectionInfo(stream ServerReflectionRequest)
      returns (stream ServerReflectionResponse);
}
message ServerReflectionRequest {
  string host = 1;
  oneof message_request {
    string file_by_filename = 3;
    string file_containing_symbol = 4;
    string list_services = 7;
  }
}
message ServerReflectionResponse {
  string valid_host = 1;
  ServerReflectionRequest original_request = 2;
  oneof message_response {
    FileDescriptorResponse file_descriptor_response = 4;
    ListServiceResponse list_services_response = 6;
    ErrorResponse error_response = 7;
  }
}
message FileDescriptorResponse { repeated bytes file_descriptor_proto = 1; }
message ListServiceResponse { repeated ServiceResponse service = 1; }
message ServiceResponse { string name = 1; }
message ErrorResponse { int32 error_code = 1; string error_message = 2; }
"""

REFLECTION_V1_CLIENT = """
import json, sys
import grpc
from google.protobuf import descriptor_pb2
import reflection_v1_pb2 as pb, reflection_v1_pb2_grpc as pb_grpc

with grpc.insecure_channel(sys.argv[1]) as channel:
    stub = pb_grpc.ServerReflectionStub(channel)
    requests = [
        pb.ServerReflectionRequest(list_services=""),
        pb.ServerReflectionRequest(file_containing_symbol="language_ranker.v1.CentralService"),
        pb.ServerReflectionRequest(file_containing_symbol="grpc.reflection.v1.ServerReflection"),
        pb.ServerReflectionRequest(file_containing_symbol="no.such.Service"),
    ]
    replies = list(stub.ServerReflectionInfo(iter(requests), timeout=10))
listed = [s.name for s in replies[0].list_services_response.service]
files = []
for reply in replies[1:3]:
    first = descriptor_pb2.FileDescriptorProto.FromString(
        reply.file_descriptor_response.file_descriptor_proto[0]
    )
    files.append([first.name, first.package, [s.name for s in first.service]])
error = replies[3].error_response.error_code
print(json.dumps({"services": listed, "files": files, "error": error}))
"""


def test_reflection_v1_lists_and_describes_services(tiny_server, tmp_path: Path) -> None:
    """A client generated from the v1 protocol, in its own process, lists and describes."""
    import json

    from grpc_tools import protoc

    (tmp_path / "reflection_v1.proto").write_text(REFLECTION_V1_PROTO)
    (tmp_path / "client.py").write_text(textwrap.dedent(REFLECTION_V1_CLIENT))
    args = [f"-I{tmp_path}", f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}"]
    assert protoc.main(["protoc", *args, "reflection_v1.proto"]) == 0
    proc = subprocess.run(
        [sys.executable, "client.py", f"127.0.0.1:{tiny_server.port}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    reply = json.loads(proc.stdout)
    assert set(reply["services"]) == {
        "language_ranker.v1.CentralService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    central_file, v1_file = reply["files"]
    assert central_file[1:] == ["language_ranker.v1", ["CentralService"]]
    assert v1_file == [
        "grpc/reflection/v1/reflection.proto",
        "grpc.reflection.v1",
        ["ServerReflection"],
    ]
    assert reply["error"] == grpc.StatusCode.NOT_FOUND.value[0]


def test_non_loopback_bind_is_refused_before_loading(tmp_path: Path) -> None:
    # No model is passed in: had validation come after loading, the default
    # model would be converted into cache_dir, which stays empty.
    for host in ("0.0.0.0", "::", "192.0.2.1"):
        with pytest.raises(ConfigError, match="--insecure") as raised:
            start_server(ServerConfig(host=host, port=0, cache_dir=tmp_path))
        assert raised.value.option == "--host"
    with pytest.raises(ConfigError, match="--tls-key is required with --tls-cert"):
        start_server(ServerConfig(port=0, tls_cert=tmp_path / "cert.pem", cache_dir=tmp_path))
    with pytest.raises(ConfigError, match="empty or whitespace-only token"):
        start_server(ServerConfig(port=0, auth_token=" \n", cache_dir=tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_insecure_non_loopback_serves_and_warns(tiny_model, caplog) -> None:
    config = ServerConfig(host="0.0.0.0", port=0, insecure=True)
    with caplog.at_level(logging.WARNING, logger="central.server"):
        running = start_server(config, loaded=tiny_model)
    try:
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("INSECURE" in w and "without TLS" in w for w in warnings), warnings
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            info = pb_grpc.CentralServiceStub(channel).Info(pb.InfoRequest(), timeout=5)
            assert info.hidden_size == 64
    finally:
        running.stop(grace=0)


def test_tls_and_token_serve_non_loopback_without_warning(tiny_model, tmp_path, caplog) -> None:
    cert, key = self_signed(tmp_path)
    config = ServerConfig(host="0.0.0.0", port=0, tls_cert=cert, tls_key=key, auth_token="tok")
    with caplog.at_level(logging.WARNING, logger="central.server"):
        running = start_server(config, loaded=tiny_model)
    try:
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(f"localhost:{running.port}", credentials) as channel:
            stub = pb_grpc.CentralServiceStub(channel)
            info = stub.Info(
                pb.InfoRequest(), timeout=10, metadata=[("authorization", "bearer tok")]
            )
            assert info.hidden_size == 64
    finally:
        running.stop(grace=0)


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_loopback_is_bound_with_brackets(tiny_model) -> None:
    running = start_server(ServerConfig(host="::1", port=0), loaded=tiny_model)
    try:
        with grpc.insecure_channel(f"[::1]:{running.port}") as channel:
            info = pb_grpc.CentralServiceStub(channel).Info(pb.InfoRequest(), timeout=5)
            assert info.hidden_size == 64
    finally:
        running.stop(grace=0)


def test_port_in_use_is_a_config_error(tiny_server, tiny_model) -> None:
    with pytest.raises(
        ConfigError, match=f"--port cannot be bound at 127.0.0.1:{tiny_server.port}"
    ):
        start_server(ServerConfig(port=tiny_server.port), loaded=tiny_model)


def _long_request() -> pb.GenerateRequest:
    # A long raw prompt the tiny model rarely ends early on, many rows.
    return pb.GenerateRequest(prompt=pb.Prompt(text="Write a poem"), k=32, sampling=LONG)


def test_deadline_stops_generation_and_frees_the_model(own_server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{own_server.port}") as channel:
        stub = pb_grpc.CentralServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            list(stub.Generate(_long_request(), timeout=0.05))
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # The engine drops the request's rows once the server sees the deadline.
        assert own_server.servicer.engine.wait_idle(10)
        assert own_server.servicer.engine.rows_in_flight == 0
        quick = pb.GenerateRequest(
            prompt=pb.Prompt(text="hi"), k=1, sampling=pb.SamplingParams(max_new_tokens=2)
        )
        assert len(list(stub.Generate(quick, timeout=10))) == 3


def test_client_cancellation_stops_generation(own_server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{own_server.port}") as channel:
        stub = pb_grpc.CentralServiceStub(channel)
        stream = stub.Generate(_long_request(), timeout=60)
        first = next(stream)
        assert first.WhichOneof("event") == "instruction"
        stream.cancel()
        assert own_server.servicer.engine.wait_idle(10)
        assert own_server.servicer.engine.rows_in_flight == 0


@pytest.mark.slow  # several seconds; CI runs it
def test_sigterm_shuts_down_gracefully(tiny_checkpoint: Path, tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "central.cli",
            "serve",
            "--model",
            str(tiny_checkpoint),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        port = None
        deadline = time.monotonic() + 120
        while port is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if "serving" in line and line.startswith("ranker-central"):
                port = int(line.rsplit(":", 1)[1])
        assert port is not None, "server did not report its port"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.CentralServiceStub(channel)
            assert stub.Info(pb.InfoRequest(), timeout=10).hidden_size == 64
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
