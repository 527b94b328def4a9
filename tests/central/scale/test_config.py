"""`ranker-central-scale`'s settings: fail-closed checks before Ray or the model
starts, one-line errors naming the flag, help that needs neither torch nor Ray."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from central._errors import ConfigError
from central.config import TOKEN_ENV
from central.scale.cli import _parser
from central.scale.config import ScaleConfig, exposure_warning, validate_scale_config

REPO = Path(__file__).resolve().parents[3]
NO_TOKEN: dict[str, str] = {}  # an environment without $RANKER_CENTRAL_TOKEN


def _validate(**fields: object) -> ScaleConfig:
    return validate_scale_config(ScaleConfig(**fields), NO_TOKEN)  # type: ignore[arg-type]


def _refused(option: str, **fields: object) -> str:
    with pytest.raises(ConfigError) as caught:
        _validate(**fields)
    assert caught.value.option == option, str(caught.value)
    return caught.value.problem


def test_defaults_serve_this_machine_only_without_a_token() -> None:
    config = _validate()
    assert not config.public and config.auth_token is None
    assert exposure_warning(config) is None
    assert not config.autoscaling


def test_public_without_a_token_is_refused_unless_insecure(tmp_path: Path) -> None:
    assert "needs a bearer token" in _refused("--public", public=True)
    loud = _validate(public=True, insecure=True)
    warning = exposure_warning(loud)
    assert warning is not None and "without client authentication" in warning
    token = tmp_path / "token"
    token.write_text("  s3cret\n")
    config = _validate(public=True, token_file=token)
    assert config.auth_token == "s3cret" and config.token_file is None
    warning = exposure_warning(config)  # a token, but Ray's proxy never encrypts
    assert warning is not None and "without TLS" in warning
    assert "client authentication" not in warning


def test_the_token_comes_from_the_environment_and_is_never_empty(tmp_path: Path) -> None:
    config = validate_scale_config(ScaleConfig(public=True), {TOKEN_ENV: "abc"})
    assert config.auth_token == "abc"
    blank = tmp_path / "blank"
    blank.write_text(" \n")
    assert "empty" in _refused("--token-file", public=True, token_file=blank)
    with pytest.raises(ConfigError, match="empty"):
        validate_scale_config(ScaleConfig(), {TOKEN_ENV: "  "})


def test_validation_is_idempotent(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret")
    once = _validate(public=True, token_file=token)
    assert validate_scale_config(once, NO_TOKEN) == once


@pytest.mark.parametrize(
    ("option", "fields"),
    [
        ("--model", {"model": "/no/such/checkpoint"}),
        ("--dtype", {"dtype": "int4"}),
        ("--replicas", {"replicas": 0}),
        ("--max-replicas", {"replicas": 3, "max_replicas": 2}),
        ("--max-ongoing-requests", {"max_ongoing_requests": 0}),
        ("--target-ongoing-requests", {"target_ongoing_requests": 0}),
        ("--cpus-per-replica", {"cpus_per_replica": -1}),
        ("--gpus-per-replica", {"gpus_per_replica": -0.5}),
        ("--address", {"address": " "}),
        ("--num-cpus", {"num_cpus": 0}),
        ("--port", {"port": 0}),
        ("--http-port", {"http_port": 70000}),
        ("--http-port", {"port": 9000, "http_port": 9000}),
        ("--proxy-location", {"proxy_location": "Disabled"}),
        ("--request-timeout", {"request_timeout_s": 0}),
        ("--app-name", {"app_name": ""}),
    ],
)
def test_each_bad_setting_names_its_flag(option: str, fields: dict[str, object]) -> None:
    _refused(option, **fields)


def test_autoscaling_needs_a_larger_maximum() -> None:
    assert _validate(replicas=2, max_replicas=4).autoscaling
    assert not _validate(replicas=2, max_replicas=2).autoscaling


def test_every_option_has_help_and_a_shown_default() -> None:
    parser = _parser()
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert not [a.dest for a in options if not a.help]
    text = " ".join(parser.format_help().split())
    assert text.count("(default:") >= len(options), text
    flags = {a.option_strings[0] for a in options}
    assert {"--replicas", "--max-replicas", "--address", "--public", "--token-file"} <= flags


def test_flags_build_the_config_the_deployment_gets() -> None:
    from central.scale.cli import _config

    args = _parser().parse_args(
        ["--replicas", "2", "--max-replicas", "5", "--cpus-per-replica", "0.5", "--max-k", "8"]
    )
    config = _config(args)
    assert isinstance(args, argparse.Namespace)
    assert (config.replicas, config.max_replicas, config.cpus_per_replica) == (2, 5, 0.5)
    assert config.limits.max_k == 8 and config.autoscaling


# Any import of these fails in the child: what a runtime-only install looks like.
BLOCKED = ("torch", "transformers", "ray")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    code = (
        f"import sys\nfor m in {BLOCKED!r}: sys.modules[m] = None\n"
        "from central.scale.cli import main\nsys.exit(main(sys.argv[1:]))"
    )
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )


def test_help_and_flag_errors_need_neither_torch_nor_ray() -> None:
    shown = _run("--help")
    assert shown.returncode == 0, shown.stderr
    assert "--replicas" in shown.stdout and "--public" in shown.stdout
    refused = _run("--public")
    assert refused.returncode == 2
    assert refused.stderr.strip().startswith("ranker-central-scale: --public serves other")
    assert len(refused.stderr.strip().splitlines()) == 1


def test_a_missing_extra_is_named_with_its_pip_command() -> None:
    missing = _run("--replicas", "1")
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "ranker-central-scale: needs torch, which is not installed: "
        "pip install 'language-ranker[central]'"
    )


def test_a_failed_deployment_reports_the_replicas_own_exception() -> None:
    from central.scale.app import last_error

    recorded = (
        "Traceback (most recent call last):\n"
        '  File "replica.py", line 4008, in _call_func_or_gen\n'
        "ValueError: an inner cause\n\n"
        "The above exception was the direct cause of the following exception:\n"
        '  File "central/model.py", line 149, in _load_directory\n'
        "central._errors.ModelLoadError: cannot load a causal LM from /m: no tokenizer\n"
        "(1) a tokenizers file\n"
    )
    assert last_error(recorded) == (
        "central._errors.ModelLoadError: cannot load a causal LM from /m: no tokenizer\n"
        "(1) a tokenizers file"
    )
    assert last_error("just a message") == "just a message"
