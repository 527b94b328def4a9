"""The README's install, as a new user runs it: a clone, a fresh virtual environment,
`pip install .` (the runtime alone, no torch), then the installed CLIs and the SDK
snippets against a real central server.

Slow (pip resolves and installs numpy, onnxruntime, onnx, grpcio: a minute or two);
CI runs it with PyPI reachable. It installs the committed HEAD (a `git clone`), as a
user's clone would be.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_readme import readme_block, shell_loop

REPO = Path(__file__).resolve().parents[1]


def _run(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A clone with the README's runtime install done in it: (clone, the env to run it)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and this repository's history to clone")
    root = tmp_path_factory.mktemp("install")
    clone = root / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    # `python` is this interpreter's base Python: what a user has before any venv
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(getattr(sys, "_base_executable", sys.executable))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    block = readme_block(False, "python -m venv .venv")
    proc = _run(["bash", "-euo", "pipefail", "-c", block], clone, env, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    venv = clone / ".venv" / "bin"
    env["PATH"] = f"{venv}{os.pathsep}{env['PATH']}"
    env["HOME"] = str(root / "home")  # the CLIs' default home goes here
    yield clone, env


@pytest.mark.slow
def test_the_install_leaves_the_clone_clean_and_brings_no_torch(installed) -> None:
    clone, env = installed
    status = _run(["git", "status", "--porcelain", "--ignored"], clone, env).stdout
    assert status.splitlines() == ["!! .venv/"]  # no build/, no *.egg-info
    python = str(clone / ".venv/bin/python")
    code = (
        "import importlib.util, importlib.resources as r\n"
        "assert importlib.util.find_spec('torch') is None\n"
        "print([r.files(p).joinpath('py.typed').is_file() "
        "for p in ('edge', 'central', 'language_ranker')])\n"
    )
    proc = _run([python, "-c", code], clone.parent, env)
    assert proc.stdout.strip() == "[True, True, True]", proc.stderr
    size = _run(["du", "-sm", str(clone / ".venv")], clone, env).stdout.split()[0]
    print(f"runtime install: {size} MB")


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [["ranker-eval", "--quick", "--out", "report"], ["ranker-personalize", "run", "--quick"]],
)
def test_research_tools_name_their_extra_in_a_runtime_install(installed, command) -> None:
    clone, env = installed
    proc = _run(command, clone.parent, env)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.endswith("which is not installed: pip install 'language-ranker[eval]'")


@pytest.mark.slow
def test_the_installed_clis_run_the_readme_loop_against_central(
    installed, tiny_checkpoint: Path
) -> None:
    clone, env = installed
    assert _run(["ranker-central", "--help"], clone.parent, env).returncode == 0
    dev = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "protos")])}
    server = subprocess.Popen(
        [sys.executable, "-m", "central.cli", "serve", "--model", str(tiny_checkpoint),
         "--port", "0"],
        cwd=REPO, env=dev, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        match = re.search(r"serving .+ on (\S+)", line)
        assert match, line
        address = match.group(1)
        outputs = []
        for command in shell_loop():
            extra = ["--central", address, "--max-new-tokens", "8"]
            args = command + (extra if command[1] == "generate" else [])
            proc = _run(args, clone.parent, env)
            assert proc.returncode == 0, (command, proc.stderr)
            outputs.append(proc.stdout)
        assert "current version is now v1" in outputs[-1]
        python = str(clone / ".venv/bin/python")
        for marker in ("me = PersonalRanker(central", "AsyncPersonalRanker(central"):
            code = readme_block(True, marker).replace("127.0.0.1:50051", address)
            proc = _run([python, "-c", code], clone.parent, env)
            assert proc.returncode == 0, proc.stderr
    finally:
        server.terminate()
        server.wait(timeout=60)
