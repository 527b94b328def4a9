"""Filling the candidate cache for one model within a time budget.

Generation dominates the cost of a run, so it is budgeted: each task gets a
share of the model's minutes in proportion to its expected tokens, and
problems are generated alternating train and test, so a cut leaves both
splits about equally filled. Problems already cached are skipped, which makes
a rerun with the same settings nearly free.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from central.model import LoadedModel, load_model
from ranker_eval.cache import CacheKey, CandidateCache
from ranker_eval.config import ModelPlan, RunConfig, TaskPlan
from ranker_eval.generation import (
    GenerationConfig,
    generate_problem,
    greedy_response,
    layer_indices,
)
from ranker_eval.tasks import Problem, Task, get_task, split_problems
from ranker_eval.tasks.humaneval import HumanEvalTask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """The cached train and test problem ids of one (model, task)."""

    cache: CandidateCache  # where the records live
    task: Task  # the task, for prompts and checks
    train: list[Problem]  # cached train problems, in generation order
    test: list[Problem]  # cached test problems, in generation order


def task_problems(task: Task, plan: TaskPlan, seed: int) -> tuple[list[Problem], list[Problem]]:
    """The planned train/test problems (the same for every model: one seeded list)."""
    return split_problems(task.problems(plan.n_train + plan.n_test, seed), plan.n_train)


def _interleaved(train: list[Problem], test: list[Problem]) -> list[Problem]:
    out: list[Problem] = []
    for i in range(max(len(train), len(test))):
        out += [p[i] for p in (train, test) if i < len(p)]
    return out


def _weight(task: Task, plan: TaskPlan) -> float:
    return (plan.n_train + plan.n_test) * plan.k * task.max_new_tokens


def planned_task(plan: TaskPlan, config: RunConfig) -> Task:
    """The task with the plan's token limit, if it sets one, and the run's code-execution policy."""
    task = get_task(plan.task)
    if isinstance(task, HumanEvalTask) and config.unsafe_exec:
        sandbox = dataclasses.replace(task.sandbox, allow_unsafe=True)
        task = dataclasses.replace(task, sandbox=sandbox)
    if plan.max_new_tokens is None:
        return task
    return dataclasses.replace(task, max_new_tokens=plan.max_new_tokens)  # type: ignore[type-var]


def cache_key(loaded: LoadedModel, task: Task, plan: TaskPlan, config: RunConfig) -> CacheKey:
    return CacheKey(
        model=loaded.name,
        task=task.name,
        k=plan.k,
        temperature=task.temperature,
        max_new_tokens=task.max_new_tokens,
        seed=config.seed,
        layers=tuple(layer_indices(loaded, config.layer_fractions)),
        weights=loaded.weights_format or "float32",
    )


def collect_model(
    plan: ModelPlan,
    config: RunConfig,
    root: Path,
    budget_s: float,
    loaded: LoadedModel | None = None,
) -> tuple[LoadedModel, list[Split]]:
    """Generates what is missing for every task of `plan`; returns the cached splits."""
    torch.set_num_threads(config.threads)
    loaded = loaded or load_model(plan.model, weights=config.weights)
    tasks = [(planned_task(p, config), p) for p in plan.tasks]
    total = sum(_weight(t, p) for t, p in tasks)
    splits = []
    for task, task_plan in tasks:
        share = budget_s * _weight(task, task_plan) / total
        splits.append(_collect_task(loaded, task, task_plan, plan, config, root, share))
    return loaded, splits


def _backfill_greedy(
    loaded: LoadedModel, task: Task, cache: CandidateCache, problems: list[Problem], deadline: float
) -> None:
    """Adds the greedy response's features to records cached before they were kept."""
    for problem in problems:
        if time.monotonic() > deadline:
            log.warning("%s/%s: budget spent, greedy features incomplete", loaded.name, task.name)
            return
        if cache.has_greedy_candidate(problem.uid):
            continue
        record = cache.load(problem.uid)
        greedy, candidate = greedy_response(loaded, task, problem)
        if greedy[0] != record.greedy[0]:
            log.warning("%s: greedy text differs from the cached one", problem.uid)
        cache.save(replace(record, greedy=greedy, greedy_candidate=candidate))


def _collect_task(
    loaded: LoadedModel,
    task: Task,
    task_plan: TaskPlan,
    plan: ModelPlan,
    config: RunConfig,
    root: Path,
    budget_s: float,
) -> Split:
    cache = CandidateCache(root, cache_key(loaded, task, task_plan, config))
    train, test = task_problems(task, task_plan, config.seed)
    beam_width = plan.beam_width if task_plan.beam else 0
    gen = GenerationConfig(k=task_plan.k, beam_width=beam_width, seed=config.seed)
    deadline = time.monotonic() + budget_s
    missing = [p for p in _interleaved(train, test) if not cache.has(p.uid)]
    # A bar on a terminal (tqdm's disable=None), nothing in logs or CI.
    progress = tqdm(missing, desc=f"{task.name} problems", unit="problem", disable=None)
    for problem in progress:
        if time.monotonic() > deadline:
            if budget_s <= 0:  # evaluate-only: reading the cache is all that was asked
                break
            log.warning("%s/%s: budget spent, stopping generation", loaded.name, task.name)
            break
        record = generate_problem(loaded, task, problem, gen)
        cache.save(record)
        progress.set_postfix(correct=f"{record.labels.mean():.0%}")
        log.info(
            "%s/%s %s: %.0f%% correct, %.1fs",
            loaded.name, task.name, problem.uid, 100 * record.labels.mean(), record.seconds,
        )  # fmt: skip
    if budget_s > 0:
        cached = [p for p in train + test if cache.has(p.uid)]
        _backfill_greedy(loaded, task, cache, cached, deadline)
    return Split(
        cache=cache,
        task=task,
        train=[p for p in train if cache.has(p.uid)],
        test=[p for p in test if cache.has(p.uid)],
    )
