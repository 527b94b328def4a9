"""benchmarks/gpu_scale.py stays runnable: its --smoke mode drives the same code
(central's engine at several loads, HF generate, the capture and bandwidth
measurements) on a tiny model on the CPU, and without CUDA it refuses in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_scale.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow  # ~20 s here (HF generate and the engine, many short runs); CI runs it
def test_smoke_mode_measures_every_part_on_a_tiny_model() -> None:
    proc = _run("--smoke", "--levels", "1,3", "--tokens", "16", "--reps", "2")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "gpu_scale" and result["device"] == "cpu"
    assert [row["requests"] for row in result["levels"]] == [1, 3]
    for row in result["levels"]:
        assert row["errors"] == [] and row["hf_batched"] == "ran"
        assert row["engine_tok_s"] > 0 and row["hf_one_per_call_tok_s"] > 0
        assert 0 < row["first_message_p50_s"] <= row["first_candidate_p50_s"]
    assert len(result["capture"]["features_s"]) == 2 and result["capture"]["ratio"] > 0
    assert result["batch1_decode"]["fraction_of_copy_bandwidth"] > 0


def test_without_cuda_it_refuses_in_one_line() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the benchmark would run")
    proc = _run()
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_scale: needs a CUDA GPU")
