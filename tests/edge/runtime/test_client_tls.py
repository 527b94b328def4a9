"""Reaching a secured central: certificates as paths or PEM bytes, mutual TLS, bearer tokens.

Both clients take the same connection options; each test runs through both
against a real TLS server on loopback (self-signed certificates for "localhost").
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from central.server import RunningServer, ServerConfig, start_server
from edge._errors import ConnectionLostError
from edge.runtime.async_client import AsyncCentralClient
from edge.runtime.client import CentralClient
from tests.central.test_server import _self_signed

CLIENTS = ("sync", "async")


def _hidden_size(kind: str, address: str, **options: Any) -> int:
    """`info().hidden_size` through the blocking or the asyncio client."""
    if kind == "sync":
        with CentralClient(address, timeout=10, **options) as central:
            return central.info().hidden_size

    async def run() -> int:
        async with AsyncCentralClient(address, timeout=10, **options) as central:
            return (await central.info()).hidden_size

    return asyncio.run(run())


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """(certificate, key) of the server and of a client, each self-signed."""
    return {
        who: _self_signed(tmp_path_factory.mktemp(f"{who}-certificate"))
        for who in ("server", "client")
    }


@pytest.fixture(scope="module")
def tls_server(tiny_model, certificates) -> Iterator[RunningServer]:
    cert, key = certificates["server"]
    running = start_server(ServerConfig(port=0, tls_cert=cert, tls_key=key), loaded=tiny_model)
    yield running
    running.stop(grace=0)


@pytest.fixture(scope="module")
def mutual_tls_server(tiny_model, certificates) -> Iterator[RunningServer]:
    """A server that also demands a client certificate signed by the client's CA."""
    cert, key = certificates["server"]
    client_cert, _ = certificates["client"]
    config = ServerConfig(port=0, tls_cert=cert, tls_key=key, tls_client_ca=client_cert)
    running = start_server(config, loaded=tiny_model)
    yield running
    running.stop(grace=0)


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("form", ["Path", "str path", "bytes", "PEM text"])
def test_root_certificates_as_a_path_or_pem(tls_server, certificates, kind: str, form: str) -> None:
    cert = certificates["server"][0]
    source = {
        "Path": cert,
        "str path": str(cert),
        "bytes": cert.read_bytes(),
        "PEM text": cert.read_text(),
    }[form]
    address = f"localhost:{tls_server.port}"
    assert _hidden_size(kind, address, root_certificates=source) == 64


@pytest.mark.parametrize("kind", CLIENTS)
def test_tls_without_the_private_ca_is_refused(tls_server, kind: str) -> None:
    with pytest.raises(ConnectionLostError, match="unavailable"):
        _hidden_size(kind, f"localhost:{tls_server.port}", tls=True)  # system roots only


@pytest.mark.parametrize("kind", CLIENTS)
def test_mutual_tls_with_a_client_certificate_from_files(
    mutual_tls_server, certificates, kind: str
) -> None:
    address = f"localhost:{mutual_tls_server.port}"
    server_cert = certificates["server"][0]
    client_cert, client_key = certificates["client"]
    presented = {"certificate_chain": str(client_cert), "private_key": client_key.read_bytes()}
    assert _hidden_size(kind, address, root_certificates=server_cert, **presented) == 64
    with pytest.raises(ConnectionLostError):
        _hidden_size(kind, address, root_certificates=server_cert)  # no client certificate


@pytest.mark.parametrize("client", [CentralClient, AsyncCentralClient])
@pytest.mark.parametrize("option", ["root_certificates", "private_key", "certificate_chain"])
def test_a_missing_certificate_file_is_named(tmp_path: Path, client: type, option: str) -> None:
    missing = tmp_path / "missing.pem"
    options: dict[str, Any] = {"root_certificates": None, "private_key": b"-----BEGIN x"}
    options["certificate_chain"] = b"-----BEGIN x"
    options[option] = missing
    with pytest.raises(FileNotFoundError, match=rf"{option}: no such file: '.*missing\.pem'"):
        client("localhost:1", **options)


@pytest.mark.parametrize("client", [CentralClient, AsyncCentralClient])
def test_certificate_mistakes_are_refused_before_connecting(tmp_path: Path, client: type) -> None:
    not_pem = tmp_path / "cert.der"
    not_pem.write_bytes(b"\x30\x82\x01\x0a")
    with pytest.raises(ValueError, match=r"root_certificates: .*cert\.der is not PEM"):
        client("localhost:1", root_certificates=not_pem)
    with pytest.raises(ValueError, match="root_certificates: the bytes given is not PEM"):
        client("localhost:1", root_certificates=b"not a certificate")
    with pytest.raises(IsADirectoryError, match=r"root_certificates: cannot read"):
        client("localhost:1", root_certificates=tmp_path)
    with pytest.raises(ValueError, match="private_key and certificate_chain go together"):
        client("localhost:1", private_key=b"-----BEGIN PRIVATE KEY-----")


@pytest.mark.parametrize("client", [CentralClient, AsyncCentralClient])
@pytest.mark.parametrize(
    ("token", "message"),
    [("", "token is empty"), ("  ", "token is empty"), ("tok\n", "trailing whitespace")],
)
def test_a_blank_or_padded_token_is_refused(client: type, token: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        client("localhost:1", token=token)


@pytest.mark.parametrize("kind", CLIENTS)
def test_token_over_tls(tiny_model, certificates, kind: str) -> None:
    cert, key = certificates["server"]
    config = ServerConfig(port=0, tls_cert=cert, tls_key=key, auth_token="s3cret")
    running = start_server(config, loaded=tiny_model)
    try:
        address = f"localhost:{running.port}"
        assert _hidden_size(kind, address, root_certificates=cert, token="s3cret") == 64
    finally:
        running.stop(grace=0)
