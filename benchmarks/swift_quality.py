"""Quality: SWIFT next to the Language Ranker heads on the harness's cached candidates.

Reads the candidate cache that ``ranker-eval`` filled (no generation), and
per task scores, on the full test pool (top-1 accuracy at the pool's K):
ListRanker and PointRanker (as the harness fits them: layer 0.6, its step
count and seed), training-free baselines, SWIFT over the last 4 layers'
per-token hidden states, SWIFT logits-only, the text reward model, and the
two SWIFT+RM fusions (``harness.methods_swift``: the same code the report
run registers). The intervals of the full report are not computed here:
with 13-30 test problems a task, differences under ~20 points are noise.

    python benchmarks/swift_quality.py [--cache .cache/ranker-eval] [--tasks math,function]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, base_parser, emit, set_threads


def _accuracy(test: Any, chosen: np.ndarray) -> float:
    return round(float(test.labels[np.arange(test.size), chosen].mean()), 4)


def evaluate_task(loaded: Any, methods: Any, task_plan: Any, cache: Path) -> dict[str, Any] | None:
    from harness.collect import _collect_task
    from harness.config import FULL
    from harness.evaluate import MAIN_FRACTION
    from harness.methods.base import argmax_in_subset
    from harness.methods.baselines import FirstSample, SelfConsistency, max_likelihood
    from harness.methods.data import load_pool
    from harness.methods.rankers import fit_ranker
    from harness.metrics import subsets
    from harness.tasks import get_task

    plan = FULL.models[0]
    split = _collect_task(loaded, get_task(task_plan.task), task_plan, plan, FULL, cache, 0.0)
    if not split.train or not split.test:
        return None
    train, test = load_pool(split, "train"), load_pool(split, "test")
    full = subsets(test.k, test.k, 1, test.size, 0)[0]
    main = FULL.layer_fractions.index(MAIN_FRACTION)
    row: dict[str, Any] = {"n_train": train.size, "n_test": test.size, "k": test.k}
    for kind in ("list", "point"):
        ranker = fit_ranker(kind, train, main, FULL.ranker_steps, FULL.seed)
        row[ranker.name] = _accuracy(test, ranker.choose(test, full))
    for baseline in (FirstSample(), SelfConsistency(), max_likelihood(test)):
        row[baseline.name] = _accuracy(test, baseline.choose(test, full))
    factories = {
        "SWIFT": methods.hidden,
        "SWIFT (logits)": methods.logits,
        "SWIFT+RM (rank)": methods.fused("rank"),
        "SWIFT+RM (minmax)": methods.fused("minmax"),
    }
    for name, factory in factories.items():
        selector, cost = factory(train, test, FULL.seed)
        row[name] = _accuracy(test, selector.choose(test, full))
        row[f"{name} params"] = cost.params
    rm = methods.rm_scores(train, test, FULL.seed)
    if rm is not None:
        row["text RM (MiniLM)"] = _accuracy(test, argmax_in_subset(rm, full))
    row["oracle"] = round(float(test.labels.max(1).mean()), 4)
    return row


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "ranker-eval")
    parser.add_argument("--tasks", default="math,function,sentiment,code")
    args = parser.parse_args()
    set_threads(args.threads)
    from central.model import load_model
    from harness.config import FULL
    from harness.methods_swift import SwiftHarnessConfig, _Methods

    plan = FULL.models[0]
    loaded = load_model(plan.model)
    methods = _Methods(SwiftHarnessConfig())
    methods.extractor._models[plan.model] = loaded  # reuse the loaded model
    wanted = args.tasks.split(",")
    results: dict[str, Any] = {}
    for task_plan in plan.tasks:
        if task_plan.task in wanted:
            row = evaluate_task(loaded, methods, task_plan, args.cache)
            if row is not None:
                results[task_plan.task] = row
                print(task_plan.task, row, flush=True)
    emit({"benchmark": "swift_quality", "model": loaded.name, "tasks": results})


if __name__ == "__main__":
    main()
