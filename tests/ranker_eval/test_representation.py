"""The representation study on a small planted pool: every row, every method, real training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ranker_eval.methods.data import Pool
from ranker_eval.representation import (
    FREE_BASELINES,
    REPRESENTATIONS,
    StudyConfig,
    ranker_fitter,
    study_task,
    write_study,
)
from ranker_eval.tasks import get_task


def _pool(groups: int, k: int, d: int, seed: int) -> Pool:
    """The right answer's *mean* state carries a planted direction; its last state does not."""
    rng = np.random.default_rng(seed)
    problems = get_task("math").problems(groups, seed)
    labels = np.zeros((groups, k), np.float32)
    labels[np.arange(groups), rng.integers(0, k, groups)] = 1.0
    means = rng.standard_normal((groups, k, 3, d)).astype(np.float32)
    means[..., 2, 0] += 3.0 * labels  # layer index 2 is the study's default layer
    texts = [[f"answer {g} {i}" for i in range(k)] for g in range(groups)]
    return Pool(
        problems=problems,
        prompts=[p.question for p in problems],
        instruction=rng.standard_normal((groups, 3, d)).astype(np.float32),
        candidates=rng.standard_normal((groups, k, 3, d)).astype(np.float32),
        labels=labels,
        logprobs=rng.standard_normal((groups, k)).astype(np.float32),
        texts=texts,
        answers=texts,
        greedy=np.zeros(groups, np.float32),
        beam=None,
        gen_seconds=0.0,
        means=means,
        cumulative=-rng.random((groups, k)).astype(np.float32) * 10,
        entropies=rng.random((groups, k)).astype(np.float32),
        num_tokens=np.full((groups, k), 3),
    )


@pytest.mark.slow  # trains six rankers to convergence (about a minute here)
def test_every_representation_is_trained_scored_and_written(tmp_path: Path) -> None:
    config = StudyConfig(seeds=(0,), curve_ks=(2, 4), bootstrap=200)
    train, test = _pool(24, 4, 8, seed=0), _pool(16, 4, 8, seed=1)
    study = study_task("math", train, test, ranker_fitter(config, {"mean_logprob": 1.0}), config)
    for name in REPRESENTATIONS:
        assert f"ranker[{name}]" in study.correct
    assert set(FREE_BASELINES) | {"first_sample", "oracle", "ranker_default"} <= set(study.correct)
    # The planted direction is in the mean state: reading it beats the first sample.
    assert study.correct["ranker[mean]"].mean() > study.correct["first_sample"].mean() + 0.2
    assert sorted(study.curve) == [2, 4]

    rows = write_study([study], config, tmp_path)
    assert json.loads((tmp_path / "representation.json").read_text()) == rows
    keys = {"task", "representation", "method", "accuracy", "ci_low", "ci_high"}
    assert all(set(row) == keys for row in rows)
    for row in rows:
        assert 0.0 <= row["ci_low"] <= row["accuracy"] <= row["ci_high"] <= 1.0
    methods = {row["method"] for row in rows}
    assert {"first_sample", "max_logprob", "ranker_default"} <= methods
    assert "ranker_default" in (tmp_path / "representation.md").read_text()
