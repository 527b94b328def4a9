"""Held-out top-1 with the vector parts in a random basis, on real hidden states.

The synthetic stream of ``personal_update.py`` has isotropic noise, the worst
case for a basis that does not know the taste. This checks the other side:
the personalisation study's pool (SmolLM2-135M, 576-d last-token and mean
vectors, K=8) and its nine simulated users, each replayed with five seeds by
``ranker_personalize.blockfit.replay`` (the shipped ``TasteFit`` event by
event, picks-identical to the real store / ONNX / registry loop), once with
every part whole (the default at 576-d) and once per rank with
``TasteConfig(reduce_above=512, basis_rank=rank)``, which forces both 576-d
vector parts into the seeded random basis a 4096-d model gets by default.
Rates are top-1 agreement with each user's judge on the decisive held-out
prompts, seed-averaged, then averaged over users.

    python benchmarks/basis_quality.py [--pool DIR] [--ranks 256,128] [--seeds 5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _common import emit

BUDGETS = (0, 50, 200)


def main() -> None:
    from edge.app.taste import TasteConfig
    from ranker_personalize import metrics
    from ranker_personalize.blockfit import replay
    from ranker_personalize.pool import load_pool
    from ranker_personalize.simulate import pool_signals
    from ranker_personalize.study import split_pool
    from ranker_personalize.users import make_users

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pool", type=Path, default=None, help="pool (default: the largest)")
    parser.add_argument("--cache", type=Path, default=Path(".cache/personalize"), help="pools")
    parser.add_argument("--ranks", default="256,128", help="basis ranks to compare (comma list)")
    parser.add_argument("--seeds", type=int, default=5, help="feedback seeds per user")
    args = parser.parse_args()
    pool_dir = args.pool
    if pool_dir is None:
        found = sorted(p.parent for p in args.cache.glob("*/settings.json"))
        if not found:
            raise SystemExit(f"no pool under {args.cache}: pass --pool DIR")
        pool_dir = max(found, key=lambda d: len(list(d.glob("*.json"))))
    train, test = split_pool(load_pool(pool_dir))
    train_blocks, test_blocks = (
        {"last": p.candidates, "mean": p.means, "signals": pool_signals(p)} for p in (train, test)
    )
    configs = {"whole": TasteConfig()}
    for rank in (int(r) for r in args.ranks.split(",")):
        configs[f"random basis {rank}"] = TasteConfig(reduce_above=512, basis_rank=rank)
    users = make_users()
    results: dict[str, dict[str, float]] = {}
    for name, config in configs.items():
        started = time.perf_counter()
        per_user: dict[int, list[float]] = {b: [] for b in BUDGETS}
        for user in users:
            scores = np.stack([user.scores(t) for t in test.texts])
            mask = metrics.decisive(scores)
            runs = [
                replay(user, train_blocks, train.texts, test_blocks, seed, config, BUDGETS)
                for seed in range(args.seeds)
            ]
            for b in BUDGETS:
                per_user[b].append(
                    float(np.mean([metrics.hits(scores, r.picks[b])[mask].mean() for r in runs]))
                )
        results[name] = {str(b): 100 * float(np.mean(v)) for b, v in per_user.items()}
        line = ", ".join(f"{b} events {results[name][str(b)]:.1f}" for b in BUDGETS)
        print(f"{name}: mean top-1 % {line} ({time.perf_counter() - started:.0f} s)", flush=True)
    emit(
        {
            "benchmark": "basis_quality",
            "pool": str(pool_dir),
            "train_prompts": len(train.texts),
            "test_prompts": len(test.texts),
            "users": len(users),
            "seeds": args.seeds,
            "top1_percent": results,
        }
    )


if __name__ == "__main__":
    main()
