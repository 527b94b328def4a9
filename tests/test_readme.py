"""The README's numpy-array example runs as written (on small synthetic arrays)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

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
