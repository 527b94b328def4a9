"""Shared fixtures for the edge tests: small dims keep the suite fast on 2 CPU cores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edge.training.export import export_onnx
from edge.training.rankers import RankerModule, build_ranker, make_config

D = 32  # feature size used by most tests


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    # Two cores shared with other test processes: more threads only add contention.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def list_ranker() -> RankerModule:
    return build_ranker(make_config("list", D), seed=1)


@pytest.fixture(scope="session")
def point_ranker() -> RankerModule:
    return build_ranker(make_config("point", D), seed=2)


@pytest.fixture(scope="session")
def onnx_file(tmp_path_factory: pytest.TempPathFactory, list_ranker: RankerModule) -> Path:
    """A ListRanker exported (fast exporter) to a file, shared by runtime tests."""
    path = tmp_path_factory.mktemp("onnx") / "list.onnx"
    export_onnx(list_ranker, path, exporter="torchscript")
    return path
