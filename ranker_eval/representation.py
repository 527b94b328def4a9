"""The representation study: which parts of a candidate should a ranker read?

A ranker can read the last token's hidden state (the paper's one vector), the
mean state over the response's tokens, both, and each with or without the
on-device signals block (length, layout, punctuation, the model's own
log-probabilities; ``edge.runtime.signals``). This module trains the same
ranker under each representation on the harness's cached pools and scores it
on the held-out problems next to the free baselines a ranker must not lose to:
the first sample, the highest cumulative and the highest mean log-probability,
greedy decoding and self-consistency.

Every ranker is trained with several seeds; a test problem's score is the
fraction of seeds whose pick is correct, so seed noise (which moved the old
report by up to 12 points) averages out instead of deciding a verdict.
Intervals are 95% percentile bootstraps over test problems; "A vs B" is a
paired bootstrap over the same problems. The Best-of-K curve scores random
K-subsets of each problem's candidates (the ranker sees only the subset; in
the greedy_first pool every subset keeps the greedy candidate).

    ranker-eval --preset representation --phase representation --out docs/results
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.eval.stats import bootstrap_ci, paired_difference
from ranker_eval.methods.baselines import SelfConsistency
from ranker_eval.methods.data import Pool

__all__ = [
    "REPRESENTATIONS",
    "StudyConfig",
    "TaskStudy",
    "ranker_fitter",
    "representation_rows",
    "run_study",
    "study_task",
    "write_study",
]

log = logging.getLogger(__name__)

# name -> (vector parts, reads the signals block)
REPRESENTATIONS: dict[str, tuple[tuple[str, ...], bool]] = {
    "last": (("last",), False),
    "last+signals": (("last",), True),
    "mean": (("mean",), False),
    "mean+signals": (("mean",), True),
    "last+mean": (("last", "mean"), False),
    "last+mean+signals": (("last", "mean"), True),
}
FREE_BASELINES = ("max_logprob", "max_mean_logprob", "greedy", "self_consistency")
# The candidates a ranker chooses among: K samples, or (``SamplingParams.greedy_first``)
# the greedy response as candidate 0 and K-1 samples.
POOLS = ("sampled", "greedy_first")
# Methods whose pick is the same in every pool: listed and compared once.
_SAME_IN_EVERY_POOL = ("first_sample", "greedy")


@dataclass(frozen=True)
class StudyConfig:
    """How each representation is trained and scored."""

    kind: str = "list"  # ranker family trained under every representation
    seeds: tuple[int, ...] = (0, 1, 2)  # training seeds averaged per test problem
    layer: int = 2  # index into the stored layers (harness: 0.1, 0.3, 0.6, 1.0 -> 0.6)
    bootstrap: int = 2000  # resamples for every interval
    curve_ks: tuple[int, ...] = (2, 4, 8, 16)  # Best-of-K subset sizes
    curve_repeats: int = 3  # random subsets per problem, K and seed
    default: str = "last+mean+signals"  # the representation the SDK recommends
    pools: tuple[str, ...] = POOLS  # the candidate pools studied (see POOLS)
    default_pool: str = "greedy_first"  # the pool the SDK asks central for
    # initial direct weights of the signals (edge.training.RECOMMENDED_SIGNAL_PRIOR)
    signal_prior: dict[str, float] = field(
        default_factory=lambda: {"mean_logprob": 1.0, "agreement": 1.0}
    )


@dataclass
class TaskStudy:
    """One task's results: per-problem correctness of every method, and the curve."""

    task: str  # task id
    pool: str  # which candidates (see POOLS)
    n_train: int  # training problems
    n_test: int  # test problems
    k: int  # candidates per problem
    correct: dict[str, np.ndarray] = field(default_factory=dict)  # method -> (n_test,) in [0, 1]
    curve: dict[int, np.ndarray] = field(default_factory=dict)  # K -> (n_test,) ranker_default
    train_seconds: dict[str, float] = field(default_factory=dict)  # representation -> mean s


# A fitted ranker as a function of (pool, subsets (G, k)) -> (G, k) scores.
Scorer = Callable[[Pool, np.ndarray], np.ndarray]
# Fits a ranker of one representation on a train pool with one seed.
Fitter = Callable[[Pool, tuple[str, ...], bool, int], Scorer]


def ranker_fitter(config: StudyConfig, signal_prior: dict[str, float]) -> Fitter:
    """Fits the SDK's own list/point ranker (edge.training) with its default training."""

    def fit(train: Pool, vectors: tuple[str, ...], signals: bool, seed: int) -> Scorer:
        import torch

        from edge.app.dataset import GroupDataset
        from edge.training import TrainConfig, build_ranker, make_config
        from edge.training import train as train_ranker

        inputs = _inputs(train, vectors, signals, config.layer)
        mixed = (train.labels.max(axis=1) > 0) & (train.labels.min(axis=1) < 1)
        rows = np.flatnonzero(mixed) if mixed.sum() >= 2 else np.arange(train.size)
        data = GroupDataset.from_arrays(
            inputs["instruction"][rows],
            inputs["candidates"][rows],
            train.labels[rows],
            mean_candidates=None if "mean" not in vectors else inputs["mean_candidates"][rows],
            signals=None if not signals else inputs["signals"][rows],
        )
        ranker_config = make_config(
            config.kind,
            data.feature_size,
            signals=signals,
            vectors=vectors,
            signal_prior=signal_prior if signals else {},
        )
        module = build_ranker(ranker_config, seed=seed)
        train_ranker(module, data, TrainConfig(seed=seed))
        module.eval()

        def score(pool: Pool, subsets: np.ndarray) -> np.ndarray:
            arrays = _inputs(pool, vectors, False, config.layer)
            rows = np.arange(pool.size)[:, None]
            picked = {
                name: torch.from_numpy(np.ascontiguousarray(a if a.ndim == 2 else a[rows, subsets]))
                for name, a in arrays.items()
            }
            if signals:  # of the subset alone: consensus is among the candidates shown
                picked["signals"] = torch.from_numpy(pool.signals(subsets).astype(np.float32))
            with torch.no_grad():
                return np.asarray(module(**picked).numpy())

        return score

    return fit


def _inputs(
    pool: Pool, vectors: tuple[str, ...], signals: bool, layer: int
) -> dict[str, np.ndarray]:
    """The ranker's named inputs for a whole pool: (G, d) and (G, K, ...) float32."""
    instruction, last = pool.layer(layer)
    inputs = {"instruction": instruction, "candidates": last}
    if "mean" in vectors:
        inputs["mean_candidates"] = pool.mean_layer(layer)
    if signals:
        inputs["signals"] = pool.signals()
    return {name: np.asarray(a, dtype=np.float32) for name, a in inputs.items()}


def _full(pool: Pool) -> np.ndarray:
    return np.broadcast_to(np.arange(pool.k), (pool.size, pool.k))


def _picked(pool: Pool, subsets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Labels of each problem's highest-scoring subset member (ties: the earliest)."""
    best = subsets[np.arange(pool.size), np.argmax(scores, axis=1)]
    return pool.labels[np.arange(pool.size), best]


def baseline_correct(pool: Pool) -> dict[str, np.ndarray]:
    """Per-problem correctness of the training-free methods on the full pool."""
    if pool.cumulative is None:
        raise ValueError("the pool predates representation v2: regenerate it (the cache resumes)")
    full = _full(pool)
    consistent = SelfConsistency().choose(pool, full)
    return {
        "first_sample": pool.labels[:, 0],
        "max_logprob": _picked(pool, full, pool.cumulative),
        "max_mean_logprob": _picked(pool, full, pool.logprobs),
        "greedy": pool.greedy,
        "self_consistency": pool.labels[np.arange(pool.size), consistent],
        "oracle": pool.labels.max(axis=1),
    }


def _subsets(pool: Pool, k: int, repeats: int, seed: int, keep_first: bool) -> list[np.ndarray]:
    """Random k-subsets of each problem's candidates; with ``keep_first`` every subset
    holds candidate 0 (a greedy_first request of k candidates has the greedy one)."""
    rng = np.random.default_rng(seed * 7919 + k)
    first = int(keep_first)

    def one() -> np.ndarray:
        rest = rng.choice(np.arange(first, pool.k), size=k - first, replace=False)
        return np.sort(np.concatenate([np.arange(first), rest]))

    return [np.stack([one() for _ in range(pool.size)]) for _ in range(repeats)]


def study_task(
    task: str, train: Pool, test: Pool, fit: Fitter, config: StudyConfig, pool: str = "sampled"
) -> TaskStudy:
    """Every representation and baseline on one task's candidates of one kind (``pool``).

    The first sample is the first *sampled* candidate in either pool: what a user
    would get without a ranker."""
    first_sample = test.labels[:, 0]
    if pool == "greedy_first":
        train, test = train.with_greedy_first(), test.with_greedy_first()
    elif pool != "sampled":
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    correct = {**baseline_correct(test), "first_sample": first_sample}
    study = TaskStudy(task, pool, train.size, test.size, test.k, correct=correct)
    full = _full(test)
    for name, (vectors, signals) in REPRESENTATIONS.items():
        per_seed, seconds = [], []
        for seed in config.seeds:
            start = time.perf_counter()
            scorer = fit(train, vectors, signals, seed)
            seconds.append(time.perf_counter() - start)
            per_seed.append(_picked(test, full, scorer(test, full)))
            if name == config.default:
                for k in config.curve_ks:
                    if k > test.k:
                        continue
                    keep_first = pool == "greedy_first"
                    subsets = _subsets(test, k, config.curve_repeats, seed, keep_first)
                    hits = [_picked(test, s, scorer(test, s)) for s in subsets]
                    study.curve.setdefault(k, np.zeros(test.size))
                    study.curve[k] += np.mean(hits, axis=0) / len(config.seeds)
        study.correct[f"ranker[{name}]"] = np.mean(per_seed, axis=0)
        study.train_seconds[name] = float(np.mean(seconds))
        log.info("%s %s: %.3f", task, name, study.correct[f"ranker[{name}]"].mean())
    if pool == config.default_pool:
        study.correct["ranker_default"] = study.correct[f"ranker[{config.default}]"]
    return study


def _interval(values: np.ndarray, config: StudyConfig) -> tuple[float, float]:
    return bootstrap_ci(values, config.bootstrap, seed=0)


def representation_rows(studies: list[TaskStudy], config: StudyConfig) -> list[dict[str, Any]]:
    """The published table: one row per (task, pool, representation, method).

    The first sample is the same in every pool (the first sampled candidate), and
    so is greedy decoding: each is listed once, under the sampled pool when it was
    studied."""
    rows = []
    sampled = {s.task for s in studies if s.pool == "sampled"}
    for study in studies:
        for method, values in study.correct.items():
            if method in _SAME_IN_EVERY_POOL and study.pool != "sampled" and study.task in sampled:
                continue
            representation = "-"
            if method.startswith("ranker["):
                representation = method[len("ranker[") : -1]
                method = "ranker"
            elif method == "ranker_default":
                representation = config.default
            low, high = _interval(values, config)
            rows.append(
                {
                    "task": study.task,
                    "pool": study.pool,
                    "representation": representation,
                    "method": method,
                    "accuracy": round(float(values.mean()), 4),
                    "ci_low": round(low, 4),
                    "ci_high": round(high, 4),
                }
            )
    return rows


def comparisons(studies: list[TaskStudy], config: StudyConfig) -> dict[str, dict[str, float]]:
    """ranker_default minus the first sample and each free baseline in each pool, paired
    over one task's test problems (``studies``: that task's pools)."""
    ours = next(s for s in studies if s.pool == config.default_pool).correct["ranker_default"]
    others: dict[str, np.ndarray] = {}
    for study in sorted(studies, key=lambda s: s.pool != "sampled"):
        for method in ("first_sample", *FREE_BASELINES):
            plain = method in _SAME_IN_EVERY_POOL or study.pool == "sampled"
            name = method if plain else f"{method} ({study.pool})"
            others.setdefault(name, study.correct[method])
    out = {}
    for name, theirs in others.items():
        diff, low, high = paired_difference(ours, theirs, config.bootstrap, seed=1)
        out[name] = {
            "difference": round(diff, 4),
            "ci_low": round(low, 4),
            "ci_high": round(high, 4),
        }
    return out


def _curve(study: TaskStudy, config: StudyConfig) -> dict[str, dict[str, float]]:
    """The Best-of-K curve with a 95% interval at each K."""
    out = {}
    for k, values in sorted(study.curve.items()):
        low, high = _interval(values, config)
        out[str(k)] = {
            "accuracy": round(float(values.mean()), 4),
            "ci_low": round(low, 4),
            "ci_high": round(high, 4),
        }
    return out


def _by_task(studies: list[TaskStudy]) -> dict[str, list[TaskStudy]]:
    tasks: dict[str, list[TaskStudy]] = {}
    for study in studies:
        tasks.setdefault(study.task, []).append(study)
    return tasks


def _verdict(low: float, high: float) -> str:
    return "wins" if low > 0 else "loses" if high < 0 else "ties"


def _markdown(studies: list[TaskStudy], rows: list[dict[str, Any]], config: StudyConfig) -> str:
    lines = [
        "# Representation study",
        "",
        "What a ranker reads of a candidate, trained and scored on the same cached",
        "pools (SmolLM2-135M-Instruct, K per task below), next to the free baselines.",
        f"Ranker: `{config.kind}`, default training (early stopping), seeds",
        f"{list(config.seeds)} averaged per test problem; 95% percentile bootstrap",
        f"intervals over test problems ({config.bootstrap} resamples).",
        "",
        "Two candidate pools: `sampled` (K samples) and `greedy_first` (the greedy",
        "response as candidate 0 and K-1 samples: `SamplingParams.greedy_first`). Every",
        "baseline but greedy and the first sample (the first *sampled* candidate) is",
        f"scored on each pool. `ranker_default`: {config.default} on {config.default_pool}.",
        "",
        "Made by: `ranker-eval --preset representation --phase representation "
        "--out docs/results` (the pools: `--phase generate`, per task with `--task`).",
        "",
    ]
    for task, task_studies in _by_task(studies).items():
        first = task_studies[0]
        lines += [
            f"## {task} ({first.n_train} train / {first.n_test} test problems, K={first.k})",
            "",
            "| method | pool | representation | accuracy | 95% interval |",
            "|---|---|---|---|---|",
        ]
        for row in rows:
            if row["task"] == task:
                lines.append(
                    f"| {row['method']} | {row['pool']} | {row['representation']} | "
                    f"{row['accuracy']:.1%} | [{row['ci_low']:.1%}, {row['ci_high']:.1%}] |"
                )
        has_default = any(s.pool == config.default_pool for s in task_studies)
        lines += ["", "`ranker_default` minus each baseline, paired:", ""] if has_default else []
        for other, c in (comparisons(task_studies, config) if has_default else {}).items():
            lines.append(
                f"- vs {other}: {c['difference']:+.1%} [{c['ci_low']:+.1%}, {c['ci_high']:+.1%}]"
                f" ({_verdict(c['ci_low'], c['ci_high'])})"
            )
        lines.append("")
        for study in task_studies:
            points = []
            for k, values in sorted(study.curve.items()):
                low, high = _interval(values, config)
                points.append(f"K={k}: {values.mean():.1%} [{low:.1%}, {high:.1%}]")
            lines.append(f"Best-of-K ({config.default}, {study.pool}): {', '.join(points)}")
        seconds = ", ".join(f"{n} {s:.1f} s" for n, s in first.train_seconds.items())
        lines += ["", f"Training time per ranker ({first.pool}): {seconds}", ""]
    return "\n".join(lines)


def run_study(run: Any, cache: Path, out: Path, config: StudyConfig | None = None) -> list[dict]:
    """Reads every cached (model, task) pool of ``run`` and writes the study to ``out``."""
    from ranker_eval.collect import collect_model
    from ranker_eval.methods.data import load_pool

    config = config or StudyConfig()
    fit = ranker_fitter(config, signal_prior=config.signal_prior)
    studies = []
    for plan in run.models:
        _, splits = collect_model(plan, run, cache, budget_s=0.0)
        for split in splits:
            train, test = load_pool(split, "train"), load_pool(split, "test")
            log.info("%s: %d train / %d test problems", split.task.name, train.size, test.size)
            for pool in config.pools:
                studies.append(study_task(split.task.name, train, test, fit, config, pool))
    return write_study(studies, config, out)


def write_study(studies: list[TaskStudy], config: StudyConfig, out: Path) -> list[dict[str, Any]]:
    """representation.json (the rows), representation.md and the comparisons; returns rows."""
    out.mkdir(parents=True, exist_ok=True)
    rows = representation_rows(studies, config)
    (out / "representation.json").write_text(json.dumps(rows, indent=1) + "\n")
    details = {
        "config": asdict(config),
        "comparisons": {
            task: comparisons(task_studies, config)
            for task, task_studies in _by_task(studies).items()
            if any(s.pool == config.default_pool for s in task_studies)
        },
        "best_of_k": {f"{s.task}/{s.pool}": _curve(s, config) for s in studies},
        "train_seconds": {f"{s.task}/{s.pool}": s.train_seconds for s in studies},
    }
    (out / "representation_details.json").write_text(json.dumps(details, indent=1) + "\n")
    (out / "representation.md").write_text(_markdown(studies, rows, config))
    return rows
