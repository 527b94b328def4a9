"""End-to-end smoke test of `ranker-eval --quick` on the tiny random model.

The tiny model's answers are mostly wrong, so this checks plumbing, not
quality: candidates are generated and cached, every method is scored, the
report and plots are written, and a rerun reuses the cache.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ranker_eval.cli import main


@pytest.mark.slow  # fine-tunes the MiniLM text reward model (about a minute)
def test_quick_mode_end_to_end(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, cache = tmp_path / "report", tmp_path / "cache"
    args = ["--quick", "--model", str(tiny_checkpoint), "--out", str(out), "--cache", str(cache)]
    assert main([*args, "--json"]) == 0
    headline = json.loads(capsys.readouterr().out)
    (model,) = headline.values()
    assert {"math", "function", "sentiment"} <= set(model)
    for task, accuracies in model.items():
        assert {"first sample", "ListRanker", "PointRanker", "SWIFT", "oracle"} <= set(accuracies)
        assert ("LoRA RM" in accuracies) == (task != "code")  # too long to train on code
        assert all(0.0 <= a <= 1.0 for a in accuracies.values())
        assert accuracies["oracle"] >= accuracies["first sample"]
    report = (out / "README.md").read_text()
    assert "Best-of-K" in report and "Layer sweep" in report and "Transfer" in report
    assert list(out.glob("*.png"))
    assert not list(cache.rglob("*.pkl"))  # features are .npz, never pickle
    # A handful of test problems decides nothing: no wins or losses are claimed on them.
    results = json.loads((out / "results.json").read_text())
    small = [t for m in results["models"] for t in m["tasks"]]
    small = [t for t in small if t["diagnostics"]["test_problems"] < 10]
    assert small and all(
        c["verdict"] == "too few" for t in small for c in t["comparisons"].values()
    )

    start = time.monotonic()
    assert main([*args, "--phase", "evaluate"]) == 0  # cache only: no generation
    assert time.monotonic() - start < 60
