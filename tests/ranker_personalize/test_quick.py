"""The CI quick mode: tiny model -> cached pool -> every study phase -> report, end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ranker_personalize.cli import main
from ranker_personalize.content_users import ContentUser
from ranker_personalize.pool import PoolSettings, generate_pool, load_pool
from ranker_personalize.prompts import make_prompts, split_prompts
from ranker_personalize.study import quick_config, run_study, summarise
from ranker_personalize.users import SimUser


def _fake_harness_cache(root: Path, model: str, layer: int, d: int) -> None:
    """A correctness cache in the quality harness's format (per-problem .npz + .json)."""
    directory = root / model / "math-k4-t1.0-s0"
    directory.mkdir(parents=True)
    settings = {"model": model, "task": "math", "k": 4, "temperature": 1.0, "seed": 0}
    settings |= {"max_new_tokens": 6, "layers": [0, layer]}
    (directory / "settings.json").write_text(json.dumps(settings))
    rng = np.random.default_rng(0)
    for i in range(16):
        labels = np.zeros(4, np.float32)
        labels[rng.integers(0, 4)] = 1.0
        np.savez(
            directory / f"p{i:03d}.npz",
            instruction=rng.standard_normal((2, d)).astype(np.float16),
            candidates=rng.standard_normal((4, 2, d)).astype(np.float16),
            means=rng.standard_normal((4, 2, d)).astype(np.float16),
            labels=labels,
            logprobs=np.zeros(4, np.float32),
            cumulative=-rng.random(4).astype(np.float32),
            entropies=rng.random(4).astype(np.float32),
            num_tokens=np.array([1, 3, 6, 2], np.int32),
        )
        texts = ["5", "It is 5.", "The answer is five", "7"]
        (directory / f"p{i:03d}.json").write_text(json.dumps({"uid": f"p{i:03d}", "texts": texts}))


def test_pool_is_cached_resumable_and_carries_representation_v2(tiny_model, tmp_path: Path) -> None:
    items = make_prompts(6)
    settings = PoolSettings(tiny_model.name, 3, 4, 1.0, 2, 0)
    assert settings.representation == 2
    assert generate_pool(tiny_model, items[:4], tmp_path, settings) == 4
    assert generate_pool(tiny_model, items, tmp_path, settings) == 2  # only the missing ones
    pool = load_pool(tmp_path, items)
    d = tiny_model.hidden_size
    assert pool.candidates.shape == pool.means.shape == (6, 3, d)
    assert not np.allclose(pool.candidates, pool.means)  # the mean is not the last token
    assert ((pool.num_tokens >= 0) & (pool.num_tokens <= 4)).all()
    assert (pool.entropies > 0).any() and (pool.cumulative <= 0).all()
    assert not (pool.finished & (pool.num_tokens > 4)).any()  # EOS only within the budget
    assert len(pool.texts[0]) == 3 and pool.uids == [p.uid for p in items]
    assert not list(tmp_path.glob("*.pkl"))
    old = json.loads((tmp_path / "settings.json").read_text())
    (tmp_path / "settings.json").write_text(json.dumps({**old, "representation": 1}))
    with pytest.raises(ValueError, match="representation-1"):
        load_pool(tmp_path)


def test_prompt_split_is_disjoint_by_topic() -> None:
    items = make_prompts(320)
    assert len({p.text for p in items}) == 320
    train, test = split_prompts(items)
    assert {p.topic for p in train}.isdisjoint({p.topic for p in test})
    assert len(train) + len(test) == 320 and len(test) > 60


def _section(first: float, at: dict[int, float], ceiling: float | None) -> dict[str, Any]:
    curve = {str(b): {"mean": v} for b, v in at.items()}
    return {"first": {"mean": first}, "personal": curve, "global": curve,
            "ceiling": None if ceiling is None else {"mean": ceiling}}  # fmt: skip


def test_the_summary_keeps_the_study_users_and_adds_the_content_users_apart() -> None:
    results = {
        "users": {
            "concise": _section(0.2, {50: 0.6, 200: 0.8}, 0.9),
            "money": _section(0.1, {50: 0.3, 200: 0.5}, 0.7),
            "reader": _section(0.2, {50: 0.5, 200: 0.7}, None),
        }
    }
    summary = summarise(results, (50, 200))
    assert [u["user"] for u in summary["per_user"]] == ["concise"]
    assert summary["mean_top1_at_50"] == 60.0 and summary["first_sample_mean"] == 20.0
    content = summary["content"]
    assert content["mean_top1_at_50"] == 40.0 and content["mean_top1_at_200"] == 60.0
    assert content["mean_ceiling"] == 70.0  # over the users that have one
    assert content["per_user"][0] == {
        "user": "money",
        "first": 10.0,
        "at_50": 30.0,
        "at_200": 50.0,
        "ceiling": 70.0,
    }
    assert summarise({"users": {}}, (50, 200))["content"]["mean_top1_at_50"] is None


@pytest.mark.slow  # tens of seconds (the torch learner's cost is measured too); CI runs it
def test_quick_mode_writes_the_report(tiny_model, tmp_path: Path) -> None:
    pool_dir = tmp_path / "pool"
    settings = PoolSettings(tiny_model.name, 4, 6, 1.0, 2, 0)
    generate_pool(tiny_model, make_prompts(14), pool_dir, settings)
    harness = tmp_path / "harness"
    _fake_harness_cache(harness, tiny_model.name, 2, tiny_model.hidden_size)
    out = tmp_path / "report"
    users = [SimUser(n, n) for n in ("concise", "verbose", "formal")]
    users.append(ContentUser("reader", "reader"))  # a content user, summarised apart
    readme = run_study(pool_dir, out, config=quick_config(), users=users, correctness_root=harness)
    text = readme.read_text()
    results = json.loads((out / "results.json").read_text())
    assert "| concise |" in text and "| verbose |" in text and "## Isolation" in text
    assert (out / "learning_curves.png").stat().st_size > 1000
    assert set(results["users"]["concise"]["personal"]) == {"0", "3", "6"}
    assert set(results["users"]["concise"]["personal_no_signals"]) == {"0", "3", "6"}
    assert results["forgetting"]["history_1000"]["correctness"]  # the skill was probed
    assert results["isolation"]["concise"]["weights_equal"]
    assert results["pairs"]["concise/verbose"]["events"] == 6
    summary = results["summary"]
    assert [u["user"] for u in summary["per_user"]] == ["concise", "verbose", "formal"]
    assert [u["user"] for u in summary["content"]["per_user"]] == ["reader"]
    assert "| reader |" in text  # the content table
    free = results["costs"]["torch_free"]
    assert free["torch_importable"] is False and free["head_bytes"] <= 64 * 1024
    assert summary["update_ms_p50_torch_free"] == round(free["fit_ms"]["p50"], 2)
    assert results["costs"]["torch"]["learn_ms"]["n"] == 2
    assert results["costs"]["memory_10_users"]["rankers"] == 10
    assert not results["skipped"]


@pytest.mark.slow  # several seconds; CI runs it
def test_cli_quick_run(tiny_model, tmp_path: Path) -> None:
    pool_dir = tmp_path / "pool"
    generate_pool(tiny_model, make_prompts(12), pool_dir, PoolSettings("tiny", 4, 4, 1.0, 2, 0))
    out = tmp_path / "out"
    none = str(tmp_path / "none")
    args = ["run", "--quick", "--pool", str(pool_dir), "--out", str(out), "--no-costs"]
    assert main([*args, "--correctness-cache", none, "--budget-minutes", "0"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert "curves seed 0" not in results["skipped"]  # the first seed always runs
    assert "cold start" in results["skipped"]  # a spent budget skips the optional phases
    assert results["summary"]["update_ms_p50_torch_free"] is None  # costs not measured
