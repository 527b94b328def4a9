"""The representation study on a small planted pool: every row, every method, real training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ranker_eval.generation import GreedyCandidate
from ranker_eval.methods.data import Pool
from ranker_eval.representation import (
    FREE_BASELINES,
    REPRESENTATIONS,
    StudyConfig,
    _subsets,
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
    cumulative = (-1.5 - 10 * rng.random((groups, k))).astype(np.float32)
    greedy = [
        GreedyCandidate(
            answer=f"greedy {g}",
            last=rng.standard_normal((3, d)).astype(np.float16),
            mean=rng.standard_normal((3, d)).astype(np.float16),
            cumulative=-1.0,  # more likely than any sample: max_logprob picks it
            entropy=0.5,
            num_tokens=2,
        )
        for g in range(groups)
    ]
    return Pool(
        problems=problems,
        prompts=[p.question for p in problems],
        instruction=rng.standard_normal((groups, 3, d)).astype(np.float32),
        candidates=rng.standard_normal((groups, k, 3, d)).astype(np.float32),
        labels=labels,
        logprobs=cumulative / 3,
        texts=texts,
        answers=texts,
        greedy=np.zeros(groups, np.float32),
        beam=None,
        gen_seconds=0.0,
        means=means,
        cumulative=cumulative,
        entropies=rng.random((groups, k)).astype(np.float32),
        num_tokens=np.full((groups, k), 3),
        greedy_candidates=greedy,
        greedy_texts=[f"greedy {g}" for g in range(groups)],
    )


@pytest.mark.slow  # trains six rankers to convergence (about a minute here)
def test_every_representation_is_trained_scored_and_written(tmp_path: Path) -> None:
    config = StudyConfig(seeds=(0,), curve_ks=(2, 4), bootstrap=200)
    train, test = _pool(24, 4, 8, seed=0), _pool(16, 4, 8, seed=1)
    fit = ranker_fitter(config, {"mean_logprob": 1.0})
    study = study_task("math", train, test, fit, config, pool=config.default_pool)
    for name in REPRESENTATIONS:
        assert f"ranker[{name}]" in study.correct
    assert set(FREE_BASELINES) | {"first_sample", "oracle", "ranker_default"} <= set(study.correct)
    # The planted direction is in the mean state: reading it beats the first sample.
    assert study.correct["ranker[mean]"].mean() > study.correct["first_sample"].mean() + 0.2
    assert sorted(study.curve) == [2, 4]

    rows = write_study([study], config, tmp_path)
    assert json.loads((tmp_path / "representation.json").read_text()) == rows
    keys = {"task", "pool", "representation", "method", "accuracy", "ci_low", "ci_high"}
    assert all(set(row) == keys for row in rows)
    for row in rows:
        assert 0.0 <= row["ci_low"] <= row["accuracy"] <= row["ci_high"] <= 1.0
    methods = {row["method"] for row in rows}
    assert {"first_sample", "max_logprob", "ranker_default"} <= methods
    assert "ranker_default" in (tmp_path / "representation.md").read_text()


def test_the_greedy_first_pool_has_the_greedy_answer_as_candidate_zero() -> None:
    pool = _pool(6, 4, 8, seed=2)
    pool.greedy[:] = [1, 0, 1, 0, 1, 1]
    mixed = pool.with_greedy_first()
    for g, candidate in enumerate(pool.greedy_candidates or []):
        np.testing.assert_array_equal(mixed.candidates[g, 0], candidate.last)
        np.testing.assert_array_equal(mixed.means[g, 0], candidate.mean)
        assert mixed.texts[g][0] == f"greedy {g}" and mixed.answers[g][0] == candidate.answer
        assert mixed.texts[g][1:] == pool.texts[g][1:]
    np.testing.assert_array_equal(mixed.labels[:, 0], pool.greedy)
    np.testing.assert_array_equal(mixed.labels[:, 1:], pool.labels[:, 1:])
    assert mixed.cumulative[:, 0].tolist() == [-1.0] * 6
    assert mixed.logprobs[:, 0].tolist() == [-0.5] * 6  # per token
    for subsets in _subsets(mixed, 2, repeats=3, seed=0, keep_first=True):
        assert (subsets[:, 0] == 0).all() and (subsets[:, 1] > 0).all()


def test_both_pools_are_scored_and_compared_with_every_baseline(tmp_path: Path) -> None:
    """A training-free scorer (the mean log-probability) stands for the ranker here; the
    slow test above trains the real one."""
    config = StudyConfig(seeds=(0,), curve_ks=(2,), bootstrap=100)

    def fit(train: Pool, vectors: tuple[str, ...], signals: bool, seed: int):
        return lambda pool, subsets: pool.logprobs[np.arange(pool.size)[:, None], subsets]

    train, test = _pool(8, 4, 8, seed=0), _pool(12, 4, 8, seed=1)
    test.greedy[:] = 1.0  # greedy is always right, and max_logprob picks it in greedy_first
    studies = [study_task("math", train, test, fit, config, pool) for pool in config.pools]
    rows = write_study(studies, config, tmp_path)
    by_key = {(r["pool"], r["method"], r["representation"]): r for r in rows}
    assert by_key[("greedy_first", "max_logprob", "-")]["accuracy"] == 1.0
    assert by_key[("greedy_first", "ranker_default", config.default)]["accuracy"] == 1.0
    assert ("sampled", "ranker_default", config.default) not in by_key
    assert ("greedy_first", "first_sample", "-") not in by_key  # listed once, under sampled
    details = json.loads((tmp_path / "representation_details.json").read_text())
    compared = details["comparisons"]["math"]
    assert {"first_sample", *FREE_BASELINES, "max_logprob (greedy_first)"} <= set(compared)
    assert compared["greedy"]["difference"] == 0.0
