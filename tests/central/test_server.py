"""Process-level behaviour: health, reflection, auth, TLS, limits, deadlines,
cancellation and graceful shutdown, each over a real socket."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from central.server import ServerConfig, start_server
from language_ranker.v1 import ranker_pb2 as pb
from language_ranker.v1 import ranker_pb2_grpc as pb_grpc

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


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_serves_encrypted_and_refuses_plaintext(tiny_model, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
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


def _long_request() -> pb.GenerateRequest:
    # A long raw prompt the tiny model rarely ends early on, many rows.
    return pb.GenerateRequest(prompt=pb.Prompt(text="Write a poem"), k=32, sampling=LONG)


def test_deadline_stops_generation_and_frees_the_model(own_server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{own_server.port}") as channel:
        stub = pb_grpc.CentralServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            list(stub.Generate(_long_request(), timeout=0.05))
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # The model lock is released once the server sees the deadline.
        assert own_server.servicer._model_lock.acquire(timeout=10)
        own_server.servicer._model_lock.release()
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
        assert own_server.servicer._model_lock.acquire(timeout=10)
        own_server.servicer._model_lock.release()


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
