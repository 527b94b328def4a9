"""The torch-free rooms import, and work, where torch cannot be imported.

An app that only ranks ships ``edge.runtime``, ``edge.app`` and ``edge.eval``
(and SWIFT's scoring) without torch. Each of their modules is imported in a
fresh interpreter with ``sys.modules["torch"] = None``, which makes any
``import torch`` fail; the torch rooms are checked to fail there, so the
blocker is known to work.
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

TORCH_FREE_ROOMS = ("edge.runtime", "edge.app", "edge.eval")
# SWIFT's room mixes both sides; these are the modules an app ranks with.
TORCH_FREE_MODULES = (
    "edge",
    "edge._errors",
    "edge._lazy",
    "edge.swift.scoring",
    "edge.swift.tokens",
)
TORCH_MODULES = ("edge.training.rankers", "edge.training.loop", "edge.swift.head", "edge.checks")


def _torch_free_modules() -> list[str]:
    names = list(TORCH_FREE_MODULES)
    for room in TORCH_FREE_ROOMS:
        names.append(room)
        package = importlib.import_module(room)
        names += [info.name for info in pkgutil.walk_packages(package.__path__, f"{room}.")]
    return names


def _run_blocked(code: str) -> subprocess.CompletedProcess[str]:
    prelude = "import sys\nsys.modules['torch'] = None\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def test_torch_free_rooms_import_without_torch() -> None:
    modules = _torch_free_modules()
    code = (
        "import importlib\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "assert sys.modules['torch'] is None\n"
        "print(len(" + repr(modules) + "))\n"
    )
    proc = _run_blocked(code)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) == len(modules) > 20


@pytest.mark.parametrize("module", TORCH_MODULES)
def test_torch_rooms_name_the_extra_to_install(module: str) -> None:
    proc = _run_blocked(f"import {module}\n")
    assert proc.returncode != 0
    assert "MissingDependencyError" in proc.stderr
    assert "pip install 'language-ranker[train]'" in proc.stderr


def test_lazy_names_name_the_extra_and_stay_import_errors() -> None:
    code = (
        "import edge\n"
        "try:\n"
        "    edge.ListRanker\n"
        "except ImportError as error:\n"
        "    assert isinstance(error, edge.MissingDependencyError), type(error)\n"
        "    print(error)\n"
    )
    proc = _run_blocked(code)
    assert proc.returncode == 0, proc.stderr
    assert "edge.training needs torch" in proc.stdout


def test_every_public_name_of_the_torch_free_rooms_resolves_without_torch() -> None:
    code = (
        "import importlib\n"
        f"for room in {TORCH_FREE_ROOMS!r}:\n"
        "    package = importlib.import_module(room)\n"
        "    for name in package.__all__:\n"
        "        getattr(package, name)\n"
        "import edge\n"
        "edge.Ranker, edge.FeedbackStore, edge.Registry, edge.PersonalRanker, edge.CentralClient\n"
        "edge.TokenRankingSession\n"
        "print('ok')\n"
    )
    proc = _run_blocked(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_recording_feedback_loads_neither_onnxruntime_nor_onnx() -> None:
    """A process that only records feedback (the store and its records) never pays for
    the ranking runtime: ids are checked without loading the registry's sessions."""
    code = (
        "import edge.app.store, edge.app.records, edge.app.training_data\n"
        "loaded = sorted(m for m in ('onnxruntime', 'onnx', 'grpc') if m in sys.modules)\n"
        "print(loaded)\n"
    )
    proc = _run_blocked(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_opening_a_personal_ranker_loads_neither_onnx_nor_ml_dtypes(tmp_path: Path) -> None:
    """Issue 24: ``from edge import PersonalRanker`` and opening one cost ~1.2 s of CPU,
    most of it onnx and ml_dtypes, which only composing a new version needs. The
    learner loads them at its first save; opening (and ranking) loads onnxruntime."""
    code = (
        "from edge import CentralClient, PersonalRanker, AsyncPersonalRanker\n"
        f"PersonalRanker(CentralClient('127.0.0.1:1'), {str(tmp_path)!r}, 'u')\n"
        "loaded = sorted(m for m in ('onnx', 'ml_dtypes', 'onnxruntime') if m in sys.modules)\n"
        "print(loaded)\n"
    )
    proc = _run_blocked(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['onnxruntime']"
