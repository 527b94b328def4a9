"""One call from a cached pool to a written report: split, run every phase, measure, write.

Shared by the CLI (full and ``--quick``) and the end-to-end test, so CI runs
exactly the code that produced the committed report, only smaller.
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ranker_personalize.correctness import CorrectnessSet, find_correctness, load_correctness
from ranker_personalize.costs import measure_costs
from ranker_personalize.experiments import Study, StudyConfig
from ranker_personalize.pool import Pool, load_pool
from ranker_personalize.prompts import PromptItem, split_prompts
from ranker_personalize.simulate import SimConfig, learner_config
from ranker_personalize.users import SimUser, make_users

__all__ = ["interpret", "quick_config", "run_study", "split_pool"]

log = logging.getLogger(__name__)


def quick_config() -> StudyConfig:
    """CI size: one seed, budgets up to 6 events, every phase still exercised."""
    return StudyConfig(
        seeds=(0,),
        side_seeds=(0,),
        sim=SimConfig(budgets=(0, 6), update_every=6, min_steps=5),
        cold_budgets=(0, 6),
        drift_switch=3,
        drift_budgets=(0, 3, 6),
        drift_replays=(256,),
        forgetting_replays=(256,),
        forgetting_train=8,
        ceiling_steps=10,
    )


def split_pool(pool: Pool, test_fraction: float = 0.3) -> tuple[Pool, Pool]:
    """Train/test views of the pool, split by topic (see prompts.split_prompts)."""
    items = [
        PromptItem(u, p, int(t))
        for u, p, t in zip(pool.uids, pool.prompts, pool.topics, strict=True)
    ]
    train, test = split_prompts(items, test_fraction)
    index = {u: i for i, u in enumerate(pool.uids)}
    return pool.subset([index[p.uid] for p in train]), pool.subset([index[p.uid] for p in test])


def interpret(section: dict[str, Any], ceiling: dict[str, float] | None, top: int) -> str:
    """A data-driven sentence on whether and why a user's ranker learned their taste."""
    first = section["first"]["mean"]
    if section["beat_first"] is not None:
        text = f"learns: beats the first sample from {section['beat_first']} events"
        if section["beat_global"] is not None:
            return text + f" and the pooled global ranker from {section['beat_global']} events."
        return text + f", but not clearly the pooled global ranker within {top} events."
    if ceiling is not None and ceiling["low"] <= first:
        return (
            f"does not learn within {top} events, and even a ranker trained on every train prompt "
            "with the judge's exact labels does not clearly beat the first sample: this taste is "
            "not (linearly) visible in the last-token hidden state."
        )
    return (
        f"does not clearly beat the first sample within {top} events, although the full-label "
        "ceiling is above it: visible in the features, but noisy one-bit feedback needs more "
        "events than budgeted."
    )


def _correctness(root: Path | None, pool: Pool, limit: int) -> CorrectnessSet | None:
    if root is None:
        return None
    directory = find_correctness(root, pool.settings.model)
    if directory is None:
        return None
    try:
        return load_correctness(directory, pool.settings.layer, limit=limit)
    except (ValueError, FileNotFoundError) as exc:
        log.warning("correctness cache unusable: %s", exc)
        return None


def _meta(pool: Pool, train: Pool, test: Pool, config: StudyConfig) -> dict[str, Any]:
    learner = learner_config(config.sim, 0)
    return {
        "pool": {**asdict(pool.settings), "prompts": len(pool)},
        "train_prompts": len(train),
        "test_prompts": len(test),
        "seeds": list(config.seeds),
        "noise": config.noise,
        "budgets": list(config.sim.budgets),
        "cold_budgets": list(config.cold_budgets),
        "drift_budgets": list(config.drift_budgets),
        "update_every": config.sim.update_every,
        "learner": (
            f"{learner.kind} ranker, replay {learner.replay_size}, AdamW lr {learner.train.lr}, "
            f"min {learner.train.min_steps} steps, {learner.exporter} ONNX export + parity check"
        ),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores shared with other jobs",
    }


def run_study(
    pool_dir: Path,
    out: Path,
    *,
    work: Path | None = None,
    config: StudyConfig | None = None,
    users: list[SimUser] | None = None,
    deadline: float | None = None,
    correctness_root: Path | None = None,
    command: str = "python -m ranker_personalize run",
    started: float | None = None,
) -> Path:
    """Run every phase on the cached pool and write the report under ``out``."""
    started = time.perf_counter() if started is None else started
    config = config or StudyConfig()
    pool = load_pool(pool_dir)
    train, test = split_pool(pool)
    users = [replace(u, noise=config.noise) for u in (users or make_users())]
    with tempfile.TemporaryDirectory(prefix="personalize-") as tmp:
        root = work or Path(tmp)
        study = Study(train, test, users, config, root, deadline)
        study.curves()
        study.ceiling()
        study.cold_start()
        study.drift()
        limit = 2 * config.forgetting_train
        study.forgetting(_correctness(correctness_root, pool, limit))
        results = study.results
        results["learn_median_s"] = statistics.median(study.learn_seconds)
        models = sorted((root / "curves").glob("seed*/*/rankers/users/*/*/v*.onnx"))
        latest = {p.parent: p for p in models}  # newest version per user directory
        results["costs"] = measure_costs(
            users[0], train, test, root, config.sim, list(latest.values()),
            history=max(config.sim.budgets), repeats=10 if max(config.sim.budgets) > 50 else 1,
        )  # fmt: skip
    top = max(config.sim.budgets)
    results["notes"] = [
        f"`{name}` " + interpret(sec, results.get("ceiling", {}).get(name), top)
        for name, sec in results["users"].items()
    ]
    results["notes"] += _method_notes(pool)
    results["meta"] = _meta(pool, train, test, config)
    results["meta"]["command"] = command
    results["meta"]["runtime_s"] = time.perf_counter() - started
    results["meta"]["pool_note"] = _pool_note(pool_dir)
    from ranker_personalize.report import write_report

    return write_report(results, out)


def _method_notes(pool: Pool) -> list[str]:
    """Facts about the pool that bound what the judges can mean (computed, not typed in)."""
    return [
        f"Only {pool.finished.mean():.0%} of the candidates ended with EOS within "
        f"{pool.settings.max_new_tokens} new tokens, so `concise` mostly rewards fewer (longer) "
        "words in a truncated answer rather than an answer that stops early.",
        "Cold start uses a `PersonalRanker` subclass that serves the base (global) ranker until "
        "the user's first own version; the edge `PersonalRanker` alone shows the first sample "
        "until then, even when given a base.",
    ]


def _pool_note(pool_dir: Path) -> str:
    import json

    seconds = [
        json.loads(p.read_text()).get("seconds", 0.0)
        for p in pool_dir.glob("*.json")
        if p.name != "settings.json"
    ]
    return f"{len(seconds)} prompts sampled once in {sum(seconds) / 60:.0f} min, cached"
