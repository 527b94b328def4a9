"""`ranker-central` as a user meets it: help and flag errors in a runtime-only
install, one-line errors before anything loads, named extras, progress on a
terminal only, and a loud warning when told to serve insecurely.

Most checks run the command in a fresh interpreter. "Runtime-only install" is
simulated with ``sys.modules["torch"] = None`` (and transformers, gguf, grpc
health and reflection), which makes any import of them fail, so a check that
passes there cannot have loaded a model.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import grpc
import pytest

from central.cli import _parser
from central.config import TOKEN_ENV
from language_ranker.v1 import ranker_pb2 as pb
from language_ranker.v1 import ranker_pb2_grpc as pb_grpc

from .certs import self_signed

REPO = Path(__file__).resolve().parents[2]
EXTRA_ADVICE = "pip install 'language-ranker[central]'"
# What the central extra adds to the runtime install, made unimportable.
CENTRAL_EXTRA = ("torch", "transformers", "gguf", "grpc_health", "grpc_reflection")
BLOCK_EXTRAS = f"import sys\nfor name in {CENTRAL_EXTRA!r}:\n    sys.modules[name] = None\n"
# Runs the command in-process and reports which heavy modules it imported.
RUN_MAIN = """
import json, sys
from central.cli import main
code = main(sys.argv[1:])
loaded = [name for name in ("torch", "transformers") if sys.modules.get(name) is not None]
print(json.dumps({"exit": code, "loaded": loaded}))
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != TOKEN_ENV} | {"PYTHONUNBUFFERED": "1"}


def _python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_env(),
        timeout=timeout,
    )


def _run_blocked(*args: str) -> subprocess.CompletedProcess[str]:
    """``ranker-central ARGS`` where torch and transformers cannot be imported."""
    return _python(BLOCK_EXTRAS + RUN_MAIN, *args)


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["prepare", "--help"]])
def test_help_works_in_a_runtime_only_install(args: list[str]) -> None:
    proc = _run_blocked(*args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: ranker-central")
    assert "Traceback" not in proc.stderr


def test_every_option_has_help_and_shows_its_default() -> None:
    commands = _parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(commands) == {"serve", "prepare"}
    for name, command in commands.items():
        options = [a for a in command._actions if a.option_strings and a.dest != "help"]
        assert all(a.help and len(a.help) > 10 for a in options), name
        text = command.format_help()
        assert text.count("(default:") == len(options), text
    serve_help = " ".join(commands["serve"].format_help().split())
    for shown in ("(default: 127.0.0.1)", "(default: 50051)", "(default: 64)", "(default: off)"):
        assert shown in serve_help


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("cli-files")
    cert, key = self_signed(directory)
    (directory / "empty-token").write_text("  \n")
    (directory / "garbage.pem").write_text("not PEM\n")
    paths = {"cert": cert, "key": key, "dir": directory}
    paths |= {"empty": directory / "empty-token", "garbage": directory / "garbage.pem"}
    return {name: str(path) for name, path in paths.items()}


# (arguments after `--model <checkpoint>`, the start of the one-line error)
BAD_SERVE_FLAGS = [
    (["--tls-cert", "{cert}"], "--tls-key is required with --tls-cert"),
    (["--tls-key", "{key}"], "--tls-cert is required with --tls-key"),
    (["--tls-cert", "{garbage}", "--tls-key", "{key}"], "--tls-cert {garbage} holds no PEM"),
    (["--tls-cert", "{cert}", "--tls-key", "{garbage}"], "--tls-key {garbage} is not the PEM"),
    (["--tls-client-ca", "{cert}"], "--tls-client-ca needs --tls-cert and --tls-key"),
    (["--token-file", "{dir}/missing"], "--token-file cannot be read: {dir}/missing"),
    (["--token-file", "{empty}"], "--token-file {empty} holds an empty or whitespace-only"),
    (["--host", "0.0.0.0"], "--host 0.0.0.0 is not a loopback address"),
    (["--host", "0.0.0.0", "--token-file", "{empty}"], "--token-file {empty} holds an empty"),
    (["--port", "70000"], "--port must be between 0 and 65535, got 70000"),
    (["--max-k", "0"], "--max-k must be at least 1, got 0"),
    (["--max-workers", "0"], "--max-workers must be at least 1, got 0"),
    (["--cache-dir", "{garbage}"], "--cache-dir {garbage} exists and is not a directory"),
]


@pytest.mark.parametrize(("flags", "expected"), BAD_SERVE_FLAGS)
def test_bad_serve_flags_end_in_one_line_before_anything_loads(
    flags: list[str], expected: str, files: dict[str, str], tiny_checkpoint: Path
) -> None:
    # The model is real: had the command tried to load it first, the blocked
    # torch import would have ended it with a different error.
    args = ["serve", "--model", str(tiny_checkpoint), *(f.format(**files) for f in flags)]
    proc = _run_blocked(*args)
    assert json.loads(proc.stdout) == {"exit": 2, "loaded": []}
    assert proc.stderr.startswith(f"ranker-central: {expected.format(**files)}"), proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["serve", "--model", "/no/such/model"], "ranker-central: --model '/no/such/model' is"),
        (["prepare", "--model", "/no/such/model"], "ranker-central: --model '/no/such/model' is"),
        (["serve", "--port", "x"], "ranker-central serve: argument --port: invalid int value"),
        (["prepare", "--dtype", "float64"], "ranker-central prepare: argument --dtype: invalid"),
        (["serve", "--weights", "int4"], "ranker-central serve: argument --weights: invalid"),
        (
            ["prepare", "--weights", "int8", "--dtype", "float16"],
            "ranker-central: --weights int8 runs with --dtype float32, not float16",
        ),
        (
            ["serve", "--weights", "int8-upper", "--device", "cuda"],
            "ranker-central: --weights int8-upper runs on the CPU; on a GPU use auto or dense",
        ),
    ],
)
def test_argument_errors_are_one_line_too(args: list[str], expected: str) -> None:
    proc = _run_blocked(*args)
    assert proc.stderr.startswith(expected) and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_flags_are_checked_before_torch_is_even_imported(tiny_checkpoint: Path) -> None:
    """With torch installed, a bad flag still ends the command in milliseconds."""
    timed = RUN_MAIN.replace(
        "code = main(sys.argv[1:])",
        "import time\nstart = time.perf_counter()\ncode = main(sys.argv[1:])\n"
        "print(time.perf_counter() - start)",
    )
    proc = _python(timed, "serve", "--model", str(tiny_checkpoint), "--tls-cert", __file__)
    seconds, report = proc.stdout.splitlines()
    assert json.loads(report) == {"exit": 2, "loaded": []}
    assert float(seconds) < 2.0  # importing torch alone takes longer than this here
    assert proc.stderr == "ranker-central: --tls-key is required with --tls-cert\n"


def test_a_port_in_use_is_named_before_anything_loads(tiny_checkpoint: Path) -> None:
    """Issue 24: a port in use was reported only after the model had loaded (45 s)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _run_blocked("serve", "--model", str(tiny_checkpoint), "--port", str(port))
    assert json.loads(proc.stdout) == {"exit": 2, "loaded": []}  # not even torch imported
    assert proc.stderr == (
        f"ranker-central: --port {port} is in use on 127.0.0.1 (another ranker-central?); "
        "stop that server or choose another --port\n"
    )


@pytest.mark.parametrize("command", ["serve", "prepare"])
def test_commands_that_need_the_model_name_the_extra(command: str, tiny_checkpoint) -> None:
    proc = _run_blocked(command, "--model", str(tiny_checkpoint))
    assert json.loads(proc.stdout)["exit"] == 2
    assert proc.stderr == f"ranker-central: ranker-central {command} needs torch, which is " + (
        f"not installed: {EXTRA_ADVICE}\n"
    )


LIBRARY_WITHOUT_EXTRAS = """
import json
import sys

import central
from central.config import validate_config

messages = {}
assert central.ServerConfig().host == "127.0.0.1"
validate_config(central.ServerConfig(), {})
for name in ("start_server", "sample", "CentralServicer"):
    try:
        getattr(central, name)
    except central.MissingDependencyError as error:
        assert isinstance(error, ImportError) and sys.modules[error.module] is None
        messages[name] = str(error)
try:
    import central.server
except ImportError as error:
    messages["central.server"] = f"{type(error).__name__}: {error}"
try:
    central.load_model(sys.argv[1])
except central.MissingDependencyError as error:
    messages["load_model"] = str(error)
print(json.dumps(messages))
"""


def test_library_names_the_extra_where_torch_is_missing(tiny_checkpoint: Path) -> None:
    proc = _python(BLOCK_EXTRAS + LIBRARY_WITHOUT_EXTRAS, str(tiny_checkpoint))
    assert proc.returncode == 0, proc.stderr
    messages = json.loads(proc.stdout)
    assert set(messages) == {
        "start_server",
        "sample",
        "CentralServicer",
        "central.server",
        "load_model",
    }
    for message in messages.values():
        assert ", which is not installed: " in message and message.endswith(EXTRA_ADVICE)
    assert messages["central.server"].startswith("MissingDependencyError: central's gRPC server")
    assert (
        messages["sample"] == f"central.sample needs torch, which is not installed: {EXTRA_ADVICE}"
    )
    assert messages["load_model"].startswith("loading a model needs torch")


def test_import_central_loads_no_torch() -> None:
    code = "import sys, central, central.cli\nprint('torch' in sys.modules, 'grpc' in sys.modules)"
    assert _python(code).stdout.split() == ["False", "False"]


def _on_terminal(code: str, timeout: float = 60) -> str:
    """Runs ``python -c code`` with stdout and stderr on a pseudo-terminal; its output."""
    leader, follower = pty.openpty()
    # A pseudo-terminal starts 0 columns wide, which tqdm would fill with nothing.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=follower,
        stderr=follower,
        cwd=REPO,
        env=_env(),
    )
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=timeout) == 0
    return b"".join(chunks).decode(errors="replace")


PHASES = """
import time
from central.model import _CONVERSION_PHASES, _phases
with _phases("converting tiny.gguf", _CONVERSION_PHASES) as phase:
    phase("reading the tokenizer")
    time.sleep(1.6)
    phase("dequantising the weights")
    phase("saving")
"""


@pytest.mark.slow  # several seconds; CI runs it
def test_conversion_progress_shows_on_a_terminal_only() -> None:
    shown = _on_terminal(PHASES)
    assert "converting tiny.gguf: 0/3, reading the tokenizer [00:00]" in shown
    # The elapsed time ticks while a phase is silent.
    assert "converting tiny.gguf: 0/3, reading the tokenizer [00:01]" in shown
    assert "converting tiny.gguf: 3/3, done" in shown
    piped = _python(PHASES)
    assert piped.returncode == 0 and piped.stdout == "" and piped.stderr == ""


@pytest.mark.slow  # several seconds; CI runs it
def test_prepare_off_a_terminal_prints_only_where_the_model_is(tiny_checkpoint: Path) -> None:
    proc = _python(RUN_MAIN, "prepare", "--model", str(tiny_checkpoint))
    line, report = proc.stdout.splitlines()
    assert json.loads(report)["exit"] == 0
    assert line.startswith("ranker-central: tiny-llama") and "hidden size 64" in line
    assert line.endswith(f"a checkpoint directory, used in place: {tiny_checkpoint}")
    assert proc.stderr == ""  # no progress bars in a log


@pytest.mark.slow
def test_prepare_converts_a_gguf_with_progress_then_says_where(tmp_path: Path) -> None:
    command = (
        "import sys\nfrom central.cli import main\n"
        f"sys.exit(main(['prepare', '--cache-dir', {str(tmp_path)!r}]))"
    )
    shown = _on_terminal(command, timeout=900)
    assert "converting SmolLM2-135M-Instruct.Q4_1.gguf" in shown
    assert "dequantising the weights" in shown and "3/3, done" in shown
    cached = next((tmp_path / "models").iterdir())
    assert f"converted weights cached in {cached}" in shown
    again = _python(command, timeout=600)  # cached now; off a terminal: one line
    assert again.stderr == ""
    assert again.stdout.count("\n") == 1 and again.stdout.rstrip().endswith(str(cached))


INSECURE = ["--host", "0.0.0.0", "--port", "0", "--insecure"]
SERVING = "ranker-central: serving"


@pytest.mark.slow  # several seconds; CI runs it
def test_insecure_serve_warns_loudly_and_serves(tiny_checkpoint: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "central.cli", "serve", "--model", str(tiny_checkpoint), *INSECURE],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env=_env(),
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 120
        assert process.stdout is not None
        while time.monotonic() < deadline and not (lines and lines[-1].startswith(SERVING)):
            lines.append(process.stdout.readline())
        assert lines[-1].startswith(f"{SERVING} tiny-llama") and " on 0.0.0.0:" in lines[-1]
        assert sum("serving tiny-llama" in line for line in lines) == 1  # said once
        assert re.search(r"\(cpu, (int8|float32)\) on ", lines[-1])  # device, weight format
        warning = next(line for line in lines if "INSECURE" in line)
        assert "without TLS" in warning and "client authentication" in warning
        port = int(lines[-1].rsplit(":", 1)[1])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.CentralServiceStub(channel)
            assert stub.Info(pb.InfoRequest(), timeout=10).hidden_size == 64
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
