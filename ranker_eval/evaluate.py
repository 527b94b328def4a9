"""Scoring every method on the cached candidates: headline table, curves, sweeps, transfer.

All numbers in the report come from here. Each method picks one candidate
per test problem from the same cached pool; "hits" are that candidate's
programmatic labels. Best-of-K curves subsample the pool (random K-subsets,
several repeats per problem); the headline uses the whole pool in sampling
order, where "first sample" is literally the first sample.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ranker_eval.collect import Split, collect_model
from ranker_eval.config import ModelPlan, RunConfig
from ranker_eval.methods.base import MethodCost, PointwiseSelector, Selector
from ranker_eval.methods.baselines import FirstSample, Oracle, SelfConsistency, max_likelihood
from ranker_eval.methods.data import Pool, concat_pools, load_pool
from ranker_eval.methods.rankers import TrainedRanker, fit_ranker, timed_scoring
from ranker_eval.methods.reward_model import RewardModelConfig, fit_reward_model
from ranker_eval.metrics import k_grid, paired_difference, subsets, verdict, wilson
from ranker_eval.report import COMPARED
from ranker_eval.tasks import Task

log = logging.getLogger(__name__)
MAIN_FRACTION = 0.6
GENERATED = ("math", "function", "sentiment")

# Methods that need the LLM itself (SWIFT's per-token features, the LoRA RM):
# (train pool, test pool, task, seed) -> fitted selectors with their costs.
ModelMethod = Callable[[Pool, Pool, Task, int], list[tuple[PointwiseSelector, MethodCost]]]


def _hits(method: Selector, pool: Pool, chosen_sets: np.ndarray) -> np.ndarray:
    """(R, G) labels of the chosen candidates for each repeat."""
    rows = np.arange(pool.size)
    return np.stack([pool.labels[rows, method.choose(pool, s)] for s in chosen_sets])


def _accuracy(hits: np.ndarray) -> dict[str, float]:
    low, high = wilson(float(hits.sum()), len(hits))
    return {"acc": float(hits.mean()), "low": low, "high": high, "n": len(hits)}


def _full(pool: Pool) -> np.ndarray:
    return subsets(pool.k, pool.k, 1, pool.size, 0)


def _curves(
    methods: list[Selector], pool: Pool, flat: dict[str, np.ndarray], config: RunConfig
) -> dict[str, Any]:
    """Best-of-K accuracy per method for K = 1, 2, 4, ..., pool size."""
    grid = k_grid(pool.k)
    out: dict[str, Any] = {"k": grid, "methods": {}}
    for method in methods:
        out["methods"][method.name] = [
            float(
                _hits(
                    method, pool, subsets(pool.k, k, config.curve_repeats, pool.size, config.seed)
                ).mean()
            )
            for k in grid
        ]
    for name, hits in flat.items():
        out["methods"][name] = [float(hits.mean())] * len(grid)
    return out


def _layer_sweep(train: Pool, test: Pool, config: RunConfig) -> dict[str, Any]:
    """Test accuracy of both rankers trained at each stored layer."""
    sweep: dict[str, Any] = {}
    for index, fraction in enumerate(config.layer_fractions):
        row = {}
        for kind in ("list", "point"):
            ranker = fit_ranker(kind, train, index, config.ranker_steps, config.seed)
            row[ranker.name] = _accuracy(_hits(ranker, test, _full(test))[0])
        sweep[str(fraction)] = row
    return sweep


def _diagnostics(
    train: Pool, test: Pool, rankers: list[TrainedRanker], config: RunConfig, main: int
) -> dict[str, Any]:
    """Why a ranker might lose: data size, label balance, fit vs generalisation."""
    mixed = (train.labels.max(1) > 0) & (train.labels.min(1) < 1)
    half = train.subset(np.arange(max(1, train.size // 2)))
    half_acc = {}
    for kind in ("list", "point"):
        r = fit_ranker(kind, half, main, config.ranker_steps, config.seed)
        half_acc[r.name] = float(_hits(r, test, _full(test))[0].mean())
    seeds = {}
    for kind in ("list", "point"):
        accs = [
            float(
                _hits(fit_ranker(kind, train, main, config.ranker_steps, s), test, _full(test))[
                    0
                ].mean()
            )
            for s in (config.seed + 1, config.seed + 2)
        ]
        seeds[kind] = accs
    return {
        "train_problems": train.size,
        "test_problems": test.size,
        "train_mixed_groups": int(mixed.sum()),
        "train_positive_rate": float(train.labels.mean()),
        "test_positive_rate": float(test.labels.mean()),
        "train_fit": {r.name: r.train_fit for r in rankers},
        "half_data_acc": half_acc,
        "other_seeds_acc": {
            "ListRanker": seeds["list"],
            "PointRanker": seeds["point"],
        },
    }


def _fusions(trained: list[Selector]) -> list[Selector]:
    """SWIFT fused with the text RM (`edge.eval.fusion`), when both were fitted.

    Ranks are taken over the whole pool; on a Best-of-K subset the fused
    order is the whole-pool order restricted to the subset.
    """
    from edge.eval.fusion import minmax_fusion, rank_fusion

    by_name = {m.name: m for m in trained if isinstance(m, PointwiseSelector)}
    swift, rm = by_name.get("SWIFT"), by_name.get("text RM (MiniLM)")
    if swift is None or rm is None:
        return []
    return [
        PointwiseSelector("SWIFT+RM (rank)", rank_fusion(swift.scores, rm.scores)),
        PointwiseSelector("SWIFT+RM (minmax)", minmax_fusion(swift.scores, rm.scores)),
    ]


def _sum_costs(*costs: MethodCost) -> MethodCost:
    return MethodCost(
        sum(c.params for c in costs), sum(c.train_s for c in costs), sum(c.score_s for c in costs)
    )


def evaluate_task(
    split: Split, config: RunConfig, main: int, model_methods: tuple[ModelMethod, ...] = ()
) -> tuple[dict[str, Any], list[TrainedRanker]]:
    """Every method on one (model, task): headline, costs, comparisons, curves, sweeps."""
    train, test = load_pool(split, "train"), load_pool(split, "test")
    rankers = [
        fit_ranker(kind, train, main, config.ranker_steps, config.seed)
        for kind in ("list", "point")
    ]
    for r in rankers:
        r.cost.score_s = timed_scoring(r, test)
    free: list[Selector] = [FirstSample(), SelfConsistency(), max_likelihood(test)]
    costs: dict[str, MethodCost] = {m.name: MethodCost(0, 0.0, 0.0) for m in free}
    start = time.perf_counter()
    for m in free:
        m.choose(test, _full(test)[0])
    for m in free:
        costs[m.name].score_s = (time.perf_counter() - start) / len(free)
    trained: list[Selector] = [*rankers]
    for r in rankers:
        costs[r.name] = r.cost
    rm = fit_reward_model(
        train,
        RewardModelConfig(epochs=config.rm_epochs, max_pairs=config.rm_max_pairs, seed=config.seed),
    )
    if rm is not None:
        selector = rm.score(test)
        trained.append(selector)
        costs[selector.name] = rm.cost
        del rm
    for method in model_methods:
        for selector, cost in method(train, test, split.task, config.seed):
            trained.append(selector)
            costs[selector.name] = cost
    for fused in _fusions(trained):
        trained.append(fused)
        costs[fused.name] = _sum_costs(costs["SWIFT"], costs["text RM (MiniLM)"])
    oracle = Oracle()
    methods: list[Selector] = [*free, *trained, oracle]
    flat = {"greedy": test.greedy}
    if test.beam is not None:
        flat["beam search"] = test.beam
    per_problem = {m.name: _hits(m, test, _full(test))[0] for m in methods}
    per_problem.update(flat)
    headline = {name: _accuracy(h) for name, h in per_problem.items()}
    comparisons: dict[str, Any] = {}
    for name in (n for n in COMPARED if n in per_problem):
        for base in per_problem:
            if base in (name, "oracle"):
                continue
            mean, low, high = paired_difference(
                per_problem[name], per_problem[base], config.bootstrap, config.seed
            )
            comparisons[f"{name} vs {base}"] = {
                "diff": mean,
                "low": low,
                "high": high,
                "verdict": verdict(low, high, len(per_problem[name])),
            }
    result = {
        "task": split.task.name,
        "k": test.k,
        "temperature": split.task.temperature,
        "max_new_tokens": split.task.max_new_tokens,
        "generation_s": train.gen_seconds + test.gen_seconds,
        "headline": headline,
        "costs": {k: asdict(v) for k, v in costs.items()},
        "comparisons": comparisons,
        "curves": _curves(methods, test, flat, config),
        "layer_sweep": _layer_sweep(train, test, config),
        "diagnostics": _diagnostics(train, test, rankers, config, main),
        "examples": _examples(test),
    }
    return result, rankers


def _examples(test: Pool) -> list[dict[str, Any]]:
    """A few candidates of the first test problem, so readers see what is being ranked."""
    if not test.size:
        return []
    return [
        {"text": t[:160], "label": float(y)}
        for t, y in zip(test.texts[0][:4], test.labels[0][:4], strict=True)
    ]


def _transfer(trained: dict[str, list[TrainedRanker]], pools: dict[str, Pool]) -> dict[str, Any]:
    """Ranker trained on task A (rows) scored on task B's test pool (columns)."""
    out: dict[str, Any] = {}
    for source, rankers in trained.items():
        for ranker in rankers:
            row = out.setdefault(ranker.name, {}).setdefault(source, {})
            for target, pool in pools.items():
                row[target] = _accuracy(_hits(ranker, pool, _full(pool))[0])
    return out


def evaluate_model(
    plan: ModelPlan, config: RunConfig, root: Path, budget_s: float, generate: bool
) -> dict[str, Any]:
    """One model: generate what its budget allows (or read the cache), then score everything."""
    torch.set_num_threads(config.threads)
    main = config.layer_fractions.index(MAIN_FRACTION)
    loaded, splits = collect_model(plan, config, root, budget_s if generate else 0.0)
    model_methods = _model_methods(plan, config)
    info: dict[str, Any] = {
        "model": loaded.name,
        "layers": [round(f * loaded.num_layers) for f in config.layer_fractions],
        "num_layers": loaded.num_layers,
        "hidden_size": loaded.hidden_size,
        "chat": loaded.has_chat_template,
        "tasks": [],
    }
    del loaded  # the LLM is not needed to score cached candidates; free its memory
    gc.collect()
    trained: dict[str, list[TrainedRanker]] = {}
    test_pools: dict[str, Pool] = {}
    train_pools: dict[str, Pool] = {}
    for split in splits:
        if not split.train or not split.test:
            log.warning("%s: nothing cached for %s, skipped", info["model"], split.task.name)
            continue
        task_result, rankers = evaluate_task(split, config, main, model_methods)
        info["tasks"].append(task_result)
        if split.task.name in GENERATED:
            trained[split.task.name] = rankers
            test_pools[split.task.name] = load_pool(split, "test")
            train_pools[split.task.name] = load_pool(split, "train")
    if len(train_pools) > 1:  # more data: one ranker trained on every family's train split
        union = concat_pools(list(train_pools.values()))
        trained["all tasks"] = [
            fit_ranker(kind, union, main, config.ranker_steps, config.seed)
            for kind in ("list", "point")
        ]
    info["transfer"] = _transfer(trained, test_pools)
    return info


def _model_methods(plan: ModelPlan, config: RunConfig) -> tuple[ModelMethod, ...]:
    """The methods that need the LLM, as the config enables them."""
    methods: list[ModelMethod] = []
    if config.swift:
        from ranker_eval.methods.swift import SwiftMethods

        methods.append(SwiftMethods(plan.model, config.weights))
    if config.lora_steps > 0:
        from ranker_eval.methods.lora_rm import LoraRewardConfig, LoraRewardMethod

        lora = LoraRewardConfig(steps=config.lora_steps, seed=config.seed)
        methods.append(LoraRewardMethod(plan.model, lora))
    return tuple(methods)


def evaluate_run(
    config: RunConfig, root: Path, budget_s: float, generate: bool, jobs: int = 1
) -> dict[str, Any]:
    """All models, `jobs` at a time in worker processes (one torch thread each)."""
    if jobs <= 1 or len(config.models) <= 1:
        models = [evaluate_model(p, config, root, budget_s, generate) for p in config.models]
    else:
        ctx = multiprocessing.get_context("spawn")  # torch and fork do not mix
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = [
                pool.submit(evaluate_model, p, config, root, budget_s, generate)
                for p in config.models
            ]
            models = [f.result() for f in futures]
    return {"config": _plain(config), "models": models, "headline": _headline(models)}


def _plain(config: RunConfig) -> dict[str, Any]:
    return asdict(config)


def _headline(models: list[dict[str, Any]]) -> dict[str, Any]:
    keep = (
        "first sample",
        "greedy",
        "beam search",
        "self-consistency",
        "text RM (MiniLM)",
        "LoRA RM",
        "ListRanker",
        "PointRanker",
        "SWIFT",
        "oracle",
    )
    return {
        m["model"]: {
            t["task"]: {
                name: round(t["headline"][name]["acc"], 4) for name in keep if name in t["headline"]
            }
            for t in m["tasks"]
        }
        for m in models
    }
