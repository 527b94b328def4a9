"""Wire: does int8 feature encoding cost ranking accuracy compared with fp16?

Real candidates: the quality harness's candidate cache
(`.cache/ranker-eval/<model>/<task>-k..-t..-s0/`, per-problem .npz written by
`ranker-eval`), with the harness's own train/test split of each (model,
task) and its main layer (0.6 of depth). The cache stores features as
float16 already, so "fp16" below is bit-identical to what the harness
trains on; "int8" sends those values through the exact wire path:
`central.features.encode(x, ENCODING_INT8)` then `edge.runtime.wire.decode_tensor`
(one fp32 scale per vector, max|x| / 127).

For every cached (model, task) pool and seed, the harness's ListRanker and
PointRanker (`ranker_eval.methods.rankers.fit_ranker`, its step count) are
trained on the train split decoded each way and pick one candidate per test
problem from the same decoded-that-way test features. Per problem the hits
are averaged over seeds, and the int8 - fp16 accuracy difference gets a
paired bootstrap interval over problems (`ranker_eval.metrics`), per pool and
over all pools together. "Same pick" is how often the two rankers choose
the same candidate.

    python benchmarks/wire_quality.py [--quick] [--seeds 3]
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
from _common import ROOT, base_parser, emit, set_threads

CACHE = ROOT / ".cache" / "ranker-eval"
MIN_PROBLEMS = 8  # pools with fewer cached train or test problems are skipped


def through_wire(values: np.ndarray, encoding: str) -> np.ndarray:
    """``values`` encoded as central sends them and decoded as the edge client does."""
    from central.features import encode
    from edge.runtime.wire import ENCODINGS, decode_tensor

    return decode_tensor(encode(values, ENCODINGS[encoding]))


def cached_splits() -> list[Any]:
    """Harness Splits (its train/test problems) of every cached (model, task) with data."""
    from ranker_eval.cache import CacheKey, CandidateCache
    from ranker_eval.collect import Split, task_problems
    from ranker_eval.config import FULL
    from ranker_eval.tasks import get_task

    splits = []
    for settings in sorted(CACHE.glob("*/*/settings.json")):
        raw = json.loads(settings.read_text())
        key = CacheKey(**{**raw, "layers": tuple(raw["layers"])})
        plans = [p for m in FULL.models for p in m.tasks if (p.task, p.k) == (key.task, key.k)]
        if not plans:
            continue
        cache = CandidateCache(CACHE, key)
        task = get_task(key.task)
        train, test = task_problems(task, plans[0], key.seed)
        cached = [[p for p in ps if cache.has(p.uid)] for ps in (train, test)]
        split = Split(cache, task, *cached)
        if min(len(split.train), len(split.test)) >= MIN_PROBLEMS:
            splits.append(split)
    return splits


def decoded(pool: Any, layer: int, encoding: str) -> Any:
    """The pool with the main layer's features sent through the wire (other layers dropped)."""
    inst, cand = pool.layer(layer)
    return dataclasses.replace(
        pool,
        instruction=through_wire(inst, encoding)[:, None],
        candidates=through_wire(cand, encoding)[:, :, None],
    )


def picks(kind: str, train: Any, test: Any, steps: int, seed: int) -> np.ndarray:
    """The harness ranker's chosen candidate per test problem."""
    from ranker_eval.methods.rankers import fit_ranker

    ranker = fit_ranker(kind, train, 0, steps, seed)
    full = np.broadcast_to(np.arange(test.k), (test.size, test.k))
    return ranker.choose(test, full)


def compare(split: Any, seeds: int, steps: int) -> dict[str, Any]:
    """Per-problem hits (mean over seeds) of both rankers with fp16 and int8 features."""
    from ranker_eval.config import FULL
    from ranker_eval.evaluate import MAIN_FRACTION
    from ranker_eval.methods.data import load_pool

    layer = FULL.layer_fractions.index(MAIN_FRACTION)
    pools = {w: load_pool(split, w) for w in ("train", "test")}
    views = {e: {w: decoded(p, layer, e) for w, p in pools.items()} for e in ("fp16", "int8")}
    rows = np.arange(pools["test"].size)
    out: dict[str, Any] = {}
    for kind in ("list", "point"):
        hits = {e: np.zeros(len(rows)) for e in views}
        same = 0.0
        for seed in range(seeds):
            chosen = {e: picks(kind, v["train"], v["test"], steps, seed) for e, v in views.items()}
            for e in views:
                hits[e] += pools["test"].labels[rows, chosen[e]] / seeds
            same += float((chosen["fp16"] == chosen["int8"]).mean()) / seeds
        out[kind] = {"hits": hits, "same_pick": same}
    return out


def summary(fp16: np.ndarray, int8: np.ndarray, resamples: int) -> dict[str, float]:
    from ranker_eval.metrics import paired_difference

    diff, low, high = paired_difference(int8, fp16, resamples, seed=0)
    return {
        "n": len(fp16),
        "fp16": float(fp16.mean()),
        "int8": float(int8.mean()),
        "diff": diff,
        "low": low,
        "high": high,
    }


def main() -> None:
    from ranker_eval.config import FULL

    parser = base_parser(__doc__)
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per pool")
    args = parser.parse_args()
    set_threads(args.threads)
    seeds = 1 if args.quick else args.seeds
    steps = 100 if args.quick else FULL.ranker_steps
    splits = cached_splits()
    if not splits:
        raise SystemExit(f"no cached candidates under {CACHE}: run ranker-eval first")
    per_pool: dict[str, Any] = {}
    pooled: dict[str, dict[str, list[np.ndarray]]] = {
        k: {"fp16": [], "int8": []} for k in ("list", "point")
    }
    print(f"{seeds} seed(s), {steps} steps per ranker; int8 - fp16 top-1 accuracy, 95% paired CI")
    for split in splits:
        name = f"{split.cache.key.model}/{split.task.name}"
        result = compare(split, seeds, steps)
        per_pool[name] = {"train": len(split.train), "test": len(split.test)}
        for kind, r in result.items():
            row = summary(r["hits"]["fp16"], r["hits"]["int8"], FULL.bootstrap)
            row["same_pick"] = r["same_pick"]
            per_pool[name][kind] = row
            for e in ("fp16", "int8"):
                pooled[kind][e].append(r["hits"][e])
            print(
                f"  {name:<40} {kind:>5}: fp16 {row['fp16']:.3f} int8 {row['int8']:.3f} "
                f"diff {row['diff']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}] "
                f"same pick {row['same_pick']:.2f} (n={row['n']})"
            )
    overall = {
        kind: summary(np.concatenate(v["fp16"]), np.concatenate(v["int8"]), FULL.bootstrap)
        for kind, v in pooled.items()
    }
    for kind, row in overall.items():
        print(
            f"  {'all pools':<40} {kind:>5}: fp16 {row['fp16']:.3f} int8 {row['int8']:.3f} "
            f"diff {row['diff']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}] (n={row['n']})"
        )
    emit(
        {
            "benchmark": "wire_quality",
            "seeds": seeds,
            "steps": steps,
            "pools": per_pool,
            "overall": overall,
            "no_measurable_loss": all(r["low"] <= 0 <= r["high"] for r in overall.values()),
        }
    )


if __name__ == "__main__":
    main()
