"""SWIFT in the harness: registered through the hook, scored on the same cached candidates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import harness.methods.swift as hook
from harness.cli import main
from harness.methods_swift import SwiftHarnessConfig, install


def test_swift_is_scored_on_the_harness_candidates(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hook, "_FACTORIES", {})  # registrations stay inside this test
    install(SwiftHarnessConfig(models={64: str(tiny_checkpoint)}, epochs=3, fusion=True))
    assert set(hook.registered()) == {
        "SWIFT",
        "SWIFT (logits)",
        "SWIFT+RM (rank)",
        "SWIFT+RM (minmax)",
    }
    out, cache = tmp_path / "report", tmp_path / "cache"
    args = ["--quick", "--model", str(tiny_checkpoint), "--out", str(out), "--cache", str(cache)]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    (model,) = results["models"]
    for task in model["tasks"]:
        headline = task["headline"]
        for name in hook.registered():
            assert 0.0 <= headline[name]["acc"] <= 1.0
            assert name in task["curves"]["methods"]
        assert task["costs"]["SWIFT"]["params"] == 2 * 4 * 64 + 2  # Linear(4 layers x 64, 2)
        assert task["costs"]["SWIFT (logits)"]["params"] == 2 * (2 + 8) + 2


def test_a_model_that_does_not_match_the_cache_is_refused(tiny_checkpoint: Path) -> None:
    import numpy as np

    from harness.methods.data import Pool
    from harness.methods_swift import _Extractor
    from harness.tasks import get_task

    problems = get_task("math").problems(1, 0)
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
    extractor = _Extractor(SwiftHarnessConfig(models={64: str(tiny_checkpoint)}))
    with pytest.raises(ValueError, match="does not reproduce"):
        extractor.features(pool, 0)
