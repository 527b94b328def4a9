"""One call from a cached pool to a written report: split, run every phase, measure, write.

Shared by the CLI (full and ``--quick``) and the end-to-end test, so CI runs
exactly the code that produced the committed report, only smaller.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from ranker_personalize.content_users import CONTENT_KINDS, judge_kind, make_content_users
from ranker_personalize.correctness import CorrectnessSet, find_correctness, load_correctness
from ranker_personalize.costs import measure_costs
from ranker_personalize.experiments import Study, StudyConfig
from ranker_personalize.pool import Pool, load_pool
from ranker_personalize.prompts import PromptItem, split_prompts
from ranker_personalize.simulate import SimConfig, taste_config
from ranker_personalize.users import MIRRORS, SimUser, make_users

__all__ = [
    "TARGETS",
    "interpret",
    "quick_config",
    "run_study",
    "split_pool",
    "summarise",
    "summarise_no_signals",
]

log = logging.getLogger(__name__)

# Issue 12's targets, in percent top-1 agreement and milliseconds.
TARGETS = {"mean_at_50": 60.0, "mean_at_200": 70.0, "pair_margin_at_200": 20.0, "update_ms": 10.0}


def quick_config() -> StudyConfig:
    """CI size: one seed, budgets up to 6 events, every phase still exercised."""
    return StudyConfig(
        seeds=(0,),
        side_seeds=(0,),
        sim=SimConfig(budgets=(0, 3, 6)),
        cold_budgets=(0, 3),
        drift_switch=3,
        drift_budgets=(0, 3, 6),
        short_history=2,
        forgetting_train=4,
        ceiling_passes=10,
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


def _pct(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else round(100 * float(x), 1)


def _at(curve: dict[Any, dict[str, float]], budget: int) -> float:
    return float(curve[budget]["mean"] if budget in curve else curve[str(budget)]["mean"])


def summarise(results: dict[str, Any], budgets: tuple[int, int]) -> dict[str, Any]:
    """Issue 12's ``summary``: percent top-1 agreement per user and on average, over the
    study's own users; the content users (``content_users``) apart, under ``content``
    (issue 22), so the existing fields keep their meaning."""
    mid, top = budgets
    per_user, content = [], []
    for name, sec in results["users"].items():
        ceiling = _pct(sec["ceiling"]["mean"]) if sec.get("ceiling") else None
        first, at_mid = _pct(sec["first"]["mean"]), _pct(_at(sec["personal"], mid))
        at_top = _pct(_at(sec["personal"], top))
        if name in CONTENT_KINDS:
            content.append(
                {"user": name, "first": first, "at_50": at_mid, "at_200": at_top,
                 "ceiling": ceiling}
            )  # fmt: skip
            continue
        per_user.append(
            {
                "user": name,
                "first_sample": first,
                "at_50": at_mid,
                "at_200": at_top,
                "global_at_200": _pct(_at(sec["global"], top)),
                "ceiling": ceiling,
            }
        )
    costs = results.get("costs", {}).get("torch_free", {})
    return {
        "first_sample_mean": _mean([u["first_sample"] for u in per_user]),
        "mean_top1_at_50": _mean([u["at_50"] for u in per_user]),
        "mean_top1_at_200": _mean([u["at_200"] for u in per_user]),
        "update_ms_p50_torch_free": (
            round(costs["fit_ms"]["p50"], 2) if "fit_ms" in costs else None
        ),
        "per_user": per_user,
        "content": {
            "mean_top1_at_50": _mean([u["at_50"] for u in content]),
            "mean_top1_at_200": _mean([u["at_200"] for u in content]),
            "mean_ceiling": _mean([u["ceiling"] for u in content]),
            "per_user": content,
        },
    }


def summarise_no_signals(results: dict[str, Any], budgets: tuple[int, int]) -> dict[str, Any]:
    """The summary's two means for the head that reads no signals (several judges are
    text statistics a signal computes): kept beside issue 12's ``summary``."""
    mid, top = budgets
    bare = [s["personal_no_signals"] for s in results["users"].values()
            if "personal_no_signals" in s]  # fmt: skip
    return {
        "mean_top1_at_50": _mean([_pct(_at(c, mid)) for c in bare]),
        "mean_top1_at_200": _mean([_pct(_at(c, top)) for c in bare]),
    }


def _mean(values: list[float | None]) -> float | None:
    """Mean over the users that have a rate (a judge that ties every test prompt has none)."""
    known = [v for v in values if v is not None]
    return round(float(np.mean(known)), 1) if known else None


def _targets(results: dict[str, Any]) -> dict[str, Any]:
    summary = results["summary"]
    update = summary["update_ms_p50_torch_free"]
    return {
        "mean_at_50": {"target": TARGETS["mean_at_50"], "value": summary["mean_top1_at_50"],
                       "met": (summary["mean_top1_at_50"] or 0) >= TARGETS["mean_at_50"]},
        "mean_at_200": {"target": TARGETS["mean_at_200"], "value": summary["mean_top1_at_200"],
                        "met": (summary["mean_top1_at_200"] or 0) >= TARGETS["mean_at_200"]},
        "pairs": {
            pair: {"target": TARGETS["pair_margin_at_200"], "value": round(100 * p["margin"], 1),
                   "met": 100 * p["margin"] >= TARGETS["pair_margin_at_200"]}
            for pair, p in results.get("pairs", {}).items()
        },
        "update_ms": {"target": TARGETS["update_ms"], "value": update,
                      "met": update is not None and update <= TARGETS["update_ms"]},
    }  # fmt: skip


def interpret(name: str, section: dict[str, Any], top: int) -> str:
    """A data-driven sentence on whether and why a user's ranker learned their taste."""
    first, kind = section["first"]["mean"], judge_kind(section["judge"])
    ceiling = section.get("ceiling")
    head = f"`{name}` ({kind}) "
    if section["beat_first"] is not None:
        text = head + f"learns: beats the first sample from {section['beat_first']} events"
        if section["beat_global"] is not None:
            text += f" and the pooled global ranker from {section['beat_global']} events"
        else:
            text += f", but not clearly the pooled global ranker within {top} events"
        reach = section.get("events_to_80pct_ceiling")
        if ceiling is not None:
            text += (
                f"; it reaches 80% of its full-label ceiling ({100 * ceiling['mean']:.0f}%) "
                + (f"by {reach} events." if reach is not None else f"in none of {top} events.")
            )
        else:
            text += "."
    elif ceiling is not None and ceiling["low"] <= first:
        text = head + (
            f"does not learn within {top} events, and even the head fitted on every train "
            "prompt with the judge's exact preferences does not clearly beat the first sample: "
            "this taste is not (linearly) visible in the representation."
        )
    else:
        text = head + (
            f"does not clearly beat the first sample within {top} events, although the "
            "full-label ceiling is above it: visible in the representation, but noisy "
            "one-bit feedback needs more events than budgeted."
        )
    bare = section.get("personal_no_signals")
    if MIRRORS.get(section["judge"]) and bare is not None:
        text += (
            f" The signals {', '.join(MIRRORS[section['judge']])} compute (part of) this judge: "
            f"without the signals block it is at {100 * _at(bare, top):.0f}% at {top} events "
            f"(with: {100 * _at(section['personal'], top):.0f}%)."
        )
    return text


def _target_notes(results: dict[str, Any]) -> list[str]:
    """Why a mean target is met or missed: how far the head can go on this pool at all."""
    summary = results["summary"]
    ceilings = [u["ceiling"] for u in summary["per_user"] if u["ceiling"] is not None]
    top = summary["mean_top1_at_200"]
    if not ceilings or top is None:
        return []
    mean_ceiling = float(np.mean(ceilings))
    low = [u["user"] for u in summary["per_user"] if u["ceiling"] is not None and u["ceiling"] < 70]
    text = (
        f"The mean full-label ceiling is {mean_ceiling:.0f}% (the same head fitted on every "
        "train prompt with each user's exact preferences: what this representation and model "
        f"can show on held-out prompts); at 200 events the personal rankers average {top:.0f}%, "
        f"{100 * top / mean_ceiling:.0f}% of it. "
    )
    if low:
        text += (
            f"Below 70% even with full labels: {', '.join(low)}: the representation shows "
            "these tastes only partly. "
        )
    gaps = sorted(
        (u["ceiling"] - u["at_200"], u["user"], u["at_200"], u["ceiling"])
        for u in summary["per_user"]
        if u["ceiling"] is not None and u["at_200"] is not None
    )[::-1][:3]
    text += (
        "Furthest below their ceiling at 200 events (what more feedback could still teach): "
        + (", ".join(f"{name} ({at:.0f} vs {ceil:.0f})" for _, name, at, ceil in gaps) + ".")
    )
    return [text]


def _pair_notes(results: dict[str, Any]) -> list[str]:
    notes = []
    for pair, p in results.get("pairs", {}).items():
        verdict = "meets" if 100 * p["margin"] >= TARGETS["pair_margin_at_200"] else "misses"
        notes.append(
            f"Conflicting pair {pair}: the two personal rankers average "
            f"{100 * p['personal']:.0f}% at {p['events']} events, the pooled global ranker "
            f"{100 * p['global']:.0f}% on the same two tastes: a margin of "
            f"{100 * p['margin']:.0f} points ({verdict} the 20-point target). One ranker for "
            "both can please at most one of them wherever their answers differ."
        )
    return notes


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
    return {
        "pool": {**asdict(pool.settings), "prompts": len(pool)},
        "train_prompts": len(train),
        "test_prompts": len(test),
        "seeds": list(config.seeds),
        "side_seeds": list(config.side_seeds),
        "noise": config.noise,
        "budgets": list(config.sim.budgets),
        "cold_budgets": list(config.cold_budgets),
        "drift_budgets": list(config.drift_budgets),
        "update_every": config.sim.update_every,
        "learner": asdict(taste_config(config.sim)),
        "eos_fraction": float(pool.finished.mean()),
        "feature_size": int(pool.candidates.shape[2]),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores shared with other jobs",
    }


def _work_root() -> str | None:
    """Where user homes go by default: memory (fsync costs nothing there) if available."""
    return "/dev/shm" if Path("/dev/shm").is_dir() else None


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
    costs: bool = True,
) -> Path:
    """Run every phase on the cached pool and write the report under ``out``."""
    started = time.perf_counter() if started is None else started
    config = config or StudyConfig()
    pool = load_pool(pool_dir)
    train, test = split_pool(pool)
    # the study's users and the content users (issue 22), summarised apart
    users = [
        replace(u, noise=config.noise) for u in (users or [*make_users(), *make_content_users()])
    ]
    with tempfile.TemporaryDirectory(prefix="personalize-", dir=_work_root()) as tmp:
        root = work or Path(tmp)
        study = Study(train, test, users, config, root, deadline)
        study.curves()
        study.ceiling()
        study.summarise_users()
        study.cold_start()
        study.drift()
        study.forgetting(_correctness(correctness_root, pool, 2 * config.forgetting_train))
        study.isolation()
        results = study.results
        results["fit_ms_in_curves"] = _fit_stats(study.updates)
        if costs:
            models = sorted((root / "curves-signals").glob("seed*/*/rankers/users/*/*/v*.onnx"))
            latest = {p.parent: p for p in models}  # newest version per user directory
            start = time.perf_counter()
            history = min(200, max(config.sim.budgets))
            results["costs"] = measure_costs(
                pool_dir, train, users[0], list(latest.values()), history=history,
                repeats=30 if history >= 200 else 3, torch_repeats=10 if history >= 200 else 2,
            )  # fmt: skip
            results["seconds"]["costs"] = time.perf_counter() - start
    budgets = config.sim.budgets
    top = max(budgets)
    summary_budgets = (50, 200) if {50, 200} <= set(budgets) else (budgets[len(budgets) // 2], top)
    results["summary"] = summarise(results, summary_budgets)
    results["summary_no_signals"] = summarise_no_signals(results, summary_budgets)
    results["targets"] = _targets(results)
    results["notes"] = [interpret(n, sec, top) for n, sec in results["users"].items()]
    results["notes"] += _target_notes(results) + _pair_notes(results) + _method_notes(pool)
    results["meta"] = _meta(pool, train, test, config)
    results["meta"]["summary_budgets"] = list(summary_budgets)
    results["meta"]["command"] = command
    results["meta"]["runtime_s"] = time.perf_counter() - started
    results["meta"]["pool_note"] = _pool_note(pool_dir)
    from ranker_personalize.report import write_report

    return write_report(results, out)


def _fit_stats(updates: list[Any]) -> dict[str, float]:
    """Median fit time of the curve runs' updates (one per event, history growing)."""
    fits = [1000 * u.fit.seconds for u in updates if u.fit is not None]
    return {"p50": float(np.median(fits)), "n": len(fits)} if fits else {}


def _method_notes(pool: Pool) -> list[str]:
    """Facts about the pool that bound what the judges can mean (computed, not typed in)."""
    return [
        f"Only {pool.finished.mean():.0%} of the candidates ended with EOS within "
        f"{pool.settings.max_new_tokens} new tokens, so `concise` and `verbose` mostly "
        "compare the number of words in equally long (truncated) answers: fewer, longer "
        "words against more, shorter ones, rather than an answer that stops early.",
    ]


def _pool_note(pool_dir: Path) -> str:
    seconds = [
        json.loads(p.read_text()).get("seconds", 0.0)
        for p in pool_dir.glob("*.json")
        if p.name != "settings.json"
    ]
    return (
        f"{len(seconds)} prompts sampled once, {sum(seconds) / 60:.0f} min of wall time with one "
        "torch thread on the shared CPU, cached"
    )
