"""`validate_config`: every server setting is checked before anything loads, and
the service fails closed (no silent "auth off", no exposed plaintext bind)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from central._errors import ConfigError
from central.config import (
    TOKEN_ENV,
    ServerConfig,
    ServiceLimits,
    exposure_warning,
    is_loopback,
    validate_config,
)

from .certs import self_signed

NO_ENV: dict[str, str] = {}


def _refused(config: ServerConfig, option: str, environ: dict[str, str] = NO_ENV) -> str:
    """The message of the ConfigError that ``config`` raises, checked to name ``option``."""
    with pytest.raises(ConfigError) as raised:
        validate_config(config, environ)
    assert raised.value.option == option
    message = str(raised.value)
    assert message.startswith(option) and "\n" not in message
    return message


def test_defaults_pass_without_a_token() -> None:
    config = validate_config(ServerConfig(), NO_ENV)
    assert config.auth_token is None and config.host == "127.0.0.1"
    assert exposure_warning(config) is None


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LocalHost"]
)
def test_loopback_hosts_need_neither_tls_nor_token(host: str) -> None:
    assert is_loopback(host)
    assert exposure_warning(validate_config(ServerConfig(host=host), NO_ENV)) is None


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "[::]", "192.168.1.10", "10.0.0.1", "example.com"]
)
def test_non_loopback_hosts_are_refused_without_tls_and_auth(host: str) -> None:
    assert not is_loopback(host)
    message = _refused(ServerConfig(host=host), "--host")
    assert "--insecure" in message and "TLS" in message


@pytest.fixture()
def tls(tmp_path: Path) -> dict[str, Path]:
    cert, key = self_signed(tmp_path)
    return {"tls_cert": cert, "tls_key": key}


def test_non_loopback_needs_both_tls_and_client_auth(tls: dict[str, Path]) -> None:
    _refused(ServerConfig(host="0.0.0.0", **tls), "--host")  # TLS, anyone may call
    _refused(ServerConfig(host="0.0.0.0", auth_token="tok"), "--host")  # token in plaintext
    _refused(ServerConfig(host="0.0.0.0"), f"${TOKEN_ENV}", {TOKEN_ENV: ""})  # never "auth off"
    with_token = validate_config(ServerConfig(host="0.0.0.0", auth_token="tok", **tls), NO_ENV)
    assert exposure_warning(with_token) is None
    from_env = validate_config(ServerConfig(host="0.0.0.0", **tls), {TOKEN_ENV: "tok"})
    assert from_env.auth_token == "tok" and exposure_warning(from_env) is None
    mutual = ServerConfig(host="0.0.0.0", tls_client_ca=tls["tls_cert"], **tls)
    assert exposure_warning(validate_config(mutual, NO_ENV)) is None


def test_insecure_allows_an_exposed_bind_and_says_why(tls: dict[str, Path]) -> None:
    plain = validate_config(ServerConfig(host="0.0.0.0", insecure=True), NO_ENV)
    warning = exposure_warning(plain)
    assert warning is not None
    assert warning.startswith("serving 0.0.0.0 without TLS")
    assert "client authentication" in warning
    tls_only = exposure_warning(
        validate_config(ServerConfig(host="::", insecure=True, **tls), NO_ENV)
    )
    assert tls_only is not None and "TLS" not in tls_only.split("without", 1)[1]


@pytest.mark.parametrize("token", ["", " ", "\n", " \t\n "])
def test_empty_tokens_are_refused_from_every_source(token: str, tmp_path: Path) -> None:
    _refused(ServerConfig(auth_token=token), "auth_token")
    token_file = tmp_path / "token"
    token_file.write_text(token)
    message = _refused(ServerConfig(token_file=token_file), "--token-file")
    assert str(token_file) in message and "empty" in message
    _refused(ServerConfig(), f"${TOKEN_ENV}", {TOKEN_ENV: token})


def test_token_file_is_read_stripped_and_wins_over_the_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("  s3cret\n")
    config = validate_config(ServerConfig(token_file=token_file), {TOKEN_ENV: "other"})
    assert config.auth_token == "s3cret" and config.token_file is None
    assert validate_config(config, {TOKEN_ENV: "other"}) == config  # idempotent
    assert validate_config(ServerConfig(), {TOKEN_ENV: " tok\n"}).auth_token == "tok"


@pytest.mark.parametrize("token", ["two words", "t\u00f6ken", "tab\tinside"])
def test_tokens_must_be_sendable_as_a_header(token: str) -> None:
    assert "printable ASCII" in _refused(ServerConfig(auth_token=token), "auth_token")


def test_unreadable_token_file_names_the_flag(tmp_path: Path) -> None:
    message = _refused(ServerConfig(token_file=tmp_path / "missing"), "--token-file")
    assert "No such file" in message
    _refused(ServerConfig(token_file=tmp_path), "--token-file")  # a directory
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00")
    assert "UTF-8" in _refused(ServerConfig(token_file=binary), "--token-file")


def test_tls_flags_come_in_pairs(tls: dict[str, Path]) -> None:
    cert, key = tls["tls_cert"], tls["tls_key"]
    message = _refused(ServerConfig(tls_cert=cert), "--tls-key")
    assert message == "--tls-key is required with --tls-cert"
    assert (
        _refused(ServerConfig(tls_key=key), "--tls-cert") == "--tls-cert is required with --tls-key"
    )
    _refused(ServerConfig(tls_client_ca=cert), "--tls-client-ca")
    config = validate_config(ServerConfig(tls_client_ca=cert, **tls), NO_ENV)
    assert config.tls_cert == cert


def test_tls_files_must_be_readable_pem_that_match(tls: dict[str, Path], tmp_path: Path) -> None:
    cert, key = tls["tls_cert"], tls["tls_key"]
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    other_cert, other_key = self_signed(tmp_path, "other-")
    _, locked_key = self_signed(tmp_path, "locked-", password=b"pw")
    assert "no PEM certificate" in _refused(
        ServerConfig(tls_cert=garbage, tls_key=key), "--tls-cert"
    )
    _refused(ServerConfig(tls_cert=tmp_path / "missing.pem", tls_key=key), "--tls-cert")
    assert "not the PEM private key" in _refused(
        ServerConfig(tls_cert=cert, tls_key=garbage), "--tls-key"
    )
    _refused(ServerConfig(tls_cert=cert, tls_key=other_key), "--tls-key")  # another pair's key
    _refused(ServerConfig(tls_cert=other_cert, tls_key=key), "--tls-key")
    assert "encrypted" in _refused(ServerConfig(tls_cert=cert, tls_key=locked_key), "--tls-key")
    _refused(ServerConfig(tls_client_ca=garbage, **tls), "--tls-client-ca")
    _refused(ServerConfig(tls_client_ca=tmp_path / "missing.pem", **tls), "--tls-client-ca")


@pytest.mark.parametrize(
    ("change", "option"),
    [
        ({"port": -1}, "--port"),
        ({"port": 65536}, "--port"),
        ({"host": ""}, "--host"),
        ({"host": "local host"}, "--host"),
        ({"max_workers": 0}, "--max-workers"),
        ({"limits": ServiceLimits(max_k=0)}, "--max-k"),
        ({"limits": ServiceLimits(max_new_tokens=-5)}, "--max-new-tokens"),
        ({"limits": ServiceLimits(features_batch=0)}, "limits.features_batch"),
        ({"max_receive_bytes": 0}, "max_receive_bytes"),
        ({"grace_seconds": -1.0}, "grace_seconds"),
        ({"dtype": "float64"}, "--dtype"),
        ({"weights": "int4"}, "--weights"),
        ({"weights": "int8", "dtype": "bfloat16"}, "--weights"),
        ({"weights": "int8", "device": "cuda"}, "--weights"),
        ({"weights": "int8-upper", "dtype": "float16"}, "--weights"),
        ({"weights": "int8-upper", "device": "cuda"}, "--weights"),
        ({"model": ""}, "--model"),
        ({"model": "/no/such/model"}, "--model"),
    ],
)
def test_each_setting_is_range_checked(change: dict[str, object], option: str) -> None:
    _refused(dataclasses.replace(ServerConfig(), **change), option)  # type: ignore[arg-type]


def test_model_and_cache_paths_are_checked(tmp_path: Path) -> None:
    not_a_model = tmp_path / "weights.bin"
    not_a_model.write_bytes(b"")
    assert "neither a checkpoint directory" in _refused(
        ServerConfig(model=str(not_a_model)), "--model"
    )
    _refused(ServerConfig(cache_dir=not_a_model), "--cache-dir")
    for name in ("default", "gemma3-270m", "SmolLM2-135M-Instruct", str(tmp_path)):
        assert validate_config(ServerConfig(model=name), NO_ENV).model == name


def test_service_limits_match_the_token_chunk_default() -> None:
    from central.token_features import DEFAULT_CHUNK_BYTES

    assert ServiceLimits().token_chunk_bytes == DEFAULT_CHUNK_BYTES
