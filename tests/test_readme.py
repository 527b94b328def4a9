"""The README runs as written: its numpy-array example (on small synthetic arrays),
its SDK snippets and shell loop against a real central (the tiny model), and every
``edge`` name it mentions exists. ``tests/test_install.py`` runs its install from a
clone in a fresh virtual environment."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

import edge
from edge.runtime.signals import SIGNAL_NAMES

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


@pytest.mark.slow  # several seconds; CI runs it
def test_the_numpy_array_example_trains_exports_and_scores(tmp_path: Path, monkeypatch) -> None:
    (block,) = [b for b in _python_blocks() if "GroupDataset.from_arrays" in b]
    rng = np.random.default_rng(0)
    groups, k, d = 24, 4, 16
    labels = np.zeros((groups, k), np.float32)
    labels[:, 1] = 1.0
    namespace = {
        "instructions": rng.standard_normal((groups, d)).astype(np.float32),
        "candidates": rng.standard_normal((groups, k, d)).astype(np.float32),
        "means": rng.standard_normal((groups, k, d)).astype(np.float32),
        "signals": rng.standard_normal((groups, k, len(SIGNAL_NAMES))).astype(np.float32),
        "labels": labels,
    }
    monkeypatch.chdir(tmp_path)
    exec(compile(block, str(README), "exec"), namespace)
    assert (tmp_path / "math.onnx").exists()
    assert namespace["scores"].shape == (k,)


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)


def readme_block(python: bool, marker: str) -> str:
    """The README's one python (or bash) block that contains ``marker``."""
    (block,) = [b for b in (_python_blocks() if python else _bash_blocks()) if marker in b]
    return block


def shell_loop() -> list[list[str]]:
    """The ``ranker-edge`` lines of the README's shell loop, comments dropped."""
    block = readme_block(False, "ranker-edge feedback up")
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


_EDGE_NAME = re.compile(r"`(edge(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                target = getattr(target, name)
        except AttributeError:
            return False
        return True
    return False


def test_every_edge_name_the_readme_mentions_exists() -> None:
    """Issue 24: the SWIFT section named five modules that no longer existed, and
    `from edge import recommended_config` failed beside names that import from edge."""
    text = README.read_text()
    names = sorted(set(_EDGE_NAME.findall(text)))
    assert len(names) > 15
    missing = [n for n in names if not _resolves(n.removesuffix("."))]
    assert not missing, f"README names what does not exist: {missing}"
    for block in _python_blocks():
        for line in block.splitlines():
            if line.startswith("from edge import "):
                for name in line.removeprefix("from edge import ").split(","):
                    assert hasattr(edge, name.strip()), name


def test_the_sdk_snippets_run_as_written(tiny_server, tmp_path: Path, monkeypatch) -> None:
    """The README's PersonalRanker and AsyncPersonalRanker snippets, against a real
    central (the tiny model), with only the address changed."""
    monkeypatch.setenv("HOME", str(tmp_path))
    address = f"127.0.0.1:{tiny_server.port}"
    for marker in ("me = PersonalRanker(central", "AsyncPersonalRanker(central"):
        code = readme_block(True, marker).replace("127.0.0.1:50051", address)
        namespace: dict[str, object] = {"__name__": "readme"}
        exec(compile(code, str(README), "exec"), namespace)
    me = tmp_path / ".language-ranker/rankers/users"
    assert (me / "alice/math/manifest.json").exists() and (me / "bob/math/manifest.json").exists()


def test_the_shell_loop_runs_as_written(tiny_server, tmp_path: Path, capsys) -> None:
    from edge.cli import main

    central = ["--central", f"127.0.0.1:{tiny_server.port}", "--max-new-tokens", "8"]
    outputs = []
    for command in shell_loop():
        assert command[0] == "ranker-edge"
        argv = [*command[1:], "--home", str(tmp_path)]
        argv += central if command[1] == "generate" else []
        assert main(argv) == 0, (command, capsys.readouterr().err)
        outputs.append(capsys.readouterr().out)
    assert [o.split(":")[0] for o in outputs if o.startswith("v")] == ["v1", "v2"]
    assert "* v2" in outputs[-2] and "current version is now v1" in outputs[-1]
    assert "feedback events 2 will not be learned again" in outputs[-1]  # the pick
