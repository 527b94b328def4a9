"""Per-event personal update at 200 events of history: the torch-free learner vs torch.

Target (issue 12): a user's update costs <= 10 ms per event at 200 events of
history on one thread, with torch absent, and the per-user state fits in 64 KB.

Both learners run the app's real chain, ``PersonalRanker.thumbs`` then
``PersonalRanker.learn`` (which saves a registry version and hot-swaps the
runtime to it), on the same synthetic stream: K=8 candidates per shown set,
float16 vectors (last token and mean, 576-d and 4096-d, as central sends them),
texts and scalars, a planted direction marking the good candidate; the user
gives one thumb per set (up on the good one or down on another, at random).
Each user first learns a history of 200 events, so every timed update is a
steady-state one.

- torch-free: the default ``PersonalRanker`` (``edge.app.taste.TasteLearner``),
  run in a subprocess where ``sys.modules["torch"] = None``. Its stages are
  timed too: the fit itself (the "update" of the target; wall time, and the
  process's CPU time, which a busy machine does not inflate), composing the
  ONNX ranker, the registry save (three fsynced files) and the hot swap. Its
  first update in a fresh process (the rows rebuilt from the store) is
  reported apart.
- torch (baseline): ``learner=LearnerConfig.per_event()``, the fastest torch
  configuration (``benchmarks/p6_learning_latency.py``), in this process.

State bytes: the registry weights file a version adds (what the next update
starts from), and for the head the raw float32 vectors. Held-out top-1 on fresh
planted sets after the timed events checks that both still learn.

    python benchmarks/personal_update.py [--quick] [--dims 576,4096] [--history 200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, base_parser, emit, median

K = 8  # candidates per shown set (the demo's K)
TARGET_MS = 10.0  # per-event update, torch-free, at 200 events of history
STATE_BYTES = 64 * 1024  # per-user state
TEXTS = (
    "Short answer.",
    "- one\n- two\n- three",
    "A longer answer that explains the reasoning in a few sentences, step by step.",
    "Yes!",
    "It's 42, I think?",
    "1. first\n2. second",
    "Well. Hmm.",
    "The result follows from the definition; see above.",
)


@dataclass
class Feed:
    """Planted sets handed out one at a time as shown generations."""

    dim: int  # feature size
    seed: int  # stream seed (the planted direction is fixed across streams)
    next: int = 0  # index of the next set

    def generation(self) -> tuple[Any, int]:
        """The next set as an edge Generation, and its good candidate's index."""
        from edge.runtime.types import Candidate, Generation

        rng = np.random.default_rng((self.seed, self.next))
        self.next += 1
        direction = np.random.default_rng(1234).standard_normal(self.dim)
        direction /= np.linalg.norm(direction)
        good = int(rng.integers(K))
        shift = np.random.default_rng(99).standard_normal(self.dim) * 2.0
        last = rng.standard_normal((K, self.dim)) + shift
        last[good] += 3.0 * direction
        mean = rng.standard_normal((K, self.dim)) + shift
        cands = tuple(
            Candidate(
                i,
                TEXTS[(i + self.next) % len(TEXTS)],
                tuple(range(5 + i)),
                "eos",
                -0.5 * (5 + i),
                last[i].astype(np.float16).astype(np.float32),
                mean_feature=mean[i].astype(np.float16).astype(np.float32),
                mean_entropy=1.0 + 0.1 * i,
            )
            for i in range(K)
        )
        inst = (rng.standard_normal(self.dim) - shift).astype(np.float32)
        return Generation("prompt", inst, cands), good


class Step:
    """One timed event: a set is shown beforehand (untimed), then thumbs + learn + swap."""

    def __init__(self, me: Any, feed: Feed, rng: np.random.Generator) -> None:
        self.me, self.feed, self.rng = me, feed, rng
        self.prepare()

    def prepare(self) -> None:
        generation, good = self.feed.generation()
        self.up = bool(self.rng.random() < 0.5)
        self.pick = good if self.up else int((good + 1 + self.rng.integers(K - 1)) % K)
        self.shown = self.me.show(generation)

    def __call__(self) -> Any:
        event = self.me.thumbs(self.shown, self.pick, up=self.up)
        report = self.me.learn()
        assert report.updated and report.cursor == event, (report.updated, report.cursor, event)
        assert self.me.version == report.version
        return report


def timed_steps(me: Any, feed: Feed, reps: int, seed: int) -> tuple[list[float], list[Any]]:
    """Milliseconds of `reps` steps after one warm-up; their reports."""
    step = Step(me, feed, np.random.default_rng(seed))
    step()
    step.prepare()
    ms, reports = [], []
    for _ in range(reps):
        started = time.perf_counter()
        reports.append(step())
        ms.append(1000 * (time.perf_counter() - started))
        step.prepare()
    return ms, reports


def seed_history(me: Any, feed: Feed, events: int) -> None:
    """`events` thumbs on fresh sets, then one update that learns them all."""
    rng = np.random.default_rng(5)
    for _ in range(events):
        generation, good = feed.generation()
        up = bool(rng.random() < 0.5)
        me.thumbs(me.show(generation), good if up else (good + 1) % K, up=up)
    me.learn()


def held_out_top1(me: Any, dim: int, sets: int = 200) -> float:
    feed = Feed(dim, seed=555)
    hits = [
        int(me.rank(g).order[0]) == good for g, good in (feed.generation() for _ in range(sets))
    ]
    return float(np.mean(hits))


def stats(ms: list[float]) -> dict[str, float]:
    return {"p50": median(ms), "p95": float(np.percentile(ms, 95)), "max": max(ms)}


def stage_timer(totals: dict[str, list[float]]) -> Callable[[], None]:
    """Time the torch-free learner's stages by wrapping what it calls; returns undo."""
    import edge.app.taste.learner as learner_mod
    from edge.app.personal import PersonalRanker
    from edge.app.registry import Registry
    from edge.app.store import FeedbackStore
    from edge.app.taste import TasteFit

    targets: list[tuple[Any, str, str]] = [
        (FeedbackStore, "thumbs", "feedback event (SQLite commit)"),
        (FeedbackStore, "events", "read new events"),
        (TasteFit, "fit", "fit (the update)"),
        (learner_mod, "compose_ranker", "compose ONNX (global + head)"),
        (Registry, "save", "registry save (3 fsynced files)"),
        (PersonalRanker, "_swap", "hot swap (reopen, verify, new session)"),
    ]
    originals = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in targets]
    for (owner, attr, label), (_, _, fn) in zip(targets, originals, strict=True):
        setattr(owner, attr, _timing(fn, label, totals))

    def undo() -> None:
        for owner, attr, fn in originals:
            setattr(owner, attr, fn)

    return undo


def _timing(fn: Callable[..., Any], label: str, totals: dict[str, list[float]]) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals.setdefault(label, []).append(1000 * (time.perf_counter() - started))

    return wrapper


# -- the two learners ------------------------------------------------------------------
def torch_free(dim: int, history: int, reps: int, root: Path) -> dict[str, Any]:
    """The default PersonalRanker; meant to run where torch cannot be imported."""
    import edge.app.taste.learner as learner_mod
    from edge.app.personal import PersonalRanker
    from edge.app.taste import TasteHead

    me = PersonalRanker(None, root / f"free-{dim}", user="alice", name="chat")  # type: ignore[arg-type]
    feed = Feed(dim, seed=11)
    seed_history(me, feed, history)
    totals: dict[str, list[float]] = {}
    undo = stage_timer(totals)
    try:
        ms, reports = timed_steps(me, feed, reps, seed=100)
    finally:
        undo()
    learner_mod._CACHE._entries.clear()  # a fresh process: rows rebuilt from the store
    step = Step(me, feed, np.random.default_rng(7))
    started = time.perf_counter()
    first = step()
    first_ms = 1000 * (time.perf_counter() - started)
    weights = me.registry.load_weights("alice", "chat") or b""
    model = me.registry.load_model("alice", "chat")
    result = {
        "samples": {
            "chain_ms": ms,
            "fit_ms": [1000 * r.fit.seconds for r in reports],
            "fit_cpu_ms": [1000 * r.fit.cpu_seconds for r in reports],
            "learn_ms": [1000 * r.seconds for r in reports],
            "fit_passes": [float(r.fit.passes) for r in reports],
            "fit_refreshed": [float(r.fit.refreshed) for r in reports],
        },
        "stages": totals,
        "first_update_in_fresh_process_ms": first_ms,
        "first_update_fit_ms": 1000 * first.fit.seconds,
        "events_in_fit": int(me.registry.current("alice", "chat").metadata["events"]),
        "state_bytes": len(weights),
        "head_bytes": TasteHead.from_bytes(weights).nbytes,
        "onnx_bytes": len(model),
        "held_out_top1": held_out_top1(me, dim),
        "torch_imported": sys.modules.get("torch") is not None,
    }
    me.close()
    return result


def with_torch(dim: int, history: int, reps: int, root: Path) -> dict[str, Any]:
    """The torch Learner's per-event configuration, the baseline."""
    from edge.app.personal import PersonalRanker
    from edge.training.learner import LearnerConfig

    me = PersonalRanker(
        None,  # type: ignore[arg-type]
        root / f"torch-{dim}",
        user="alice",
        name="chat",
        learner=LearnerConfig.per_event(),
    )
    feed = Feed(dim, seed=11)
    seed_history(me, feed, history)
    ms, reports = timed_steps(me, feed, reps, seed=100)
    weights = me.registry.load_weights("alice", "chat") or b""
    result = {
        "chain_ms": stats(ms),
        "learn_ms": stats([1000 * r.seconds for r in reports]),
        "state_bytes": len(weights),
        "onnx_bytes": len(me.registry.load_model("alice", "chat")),
        "held_out_top1": held_out_top1(me, dim),
    }
    me.close()
    return result


def run_torch_free_blocked(dim: int, history: int, reps: int) -> dict[str, Any]:
    """torch_free() in a fresh interpreter where importing torch fails."""
    code = (
        "import sys, json, runpy\n"
        "sys.modules['torch'] = None\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        f"sys.argv = [{str(Path(__file__))!r}, '--worker', '{dim},{history},{reps}']\n"
        f"runpy.run_path({str(Path(__file__))!r}, run_name='__main__')\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT
    )
    if proc.returncode != 0:
        raise SystemExit(f"torch-free worker failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def pooled(*runs: dict[str, Any]) -> dict[str, Any]:
    """One torch-free result from several runs: samples pooled, the rest from the last."""
    out = {k: v for k, v in runs[-1].items() if k not in ("samples", "stages")}
    for key in runs[-1]["samples"]:
        out[key] = stats([x for run in runs for x in run["samples"][key]])
    stages = runs[-1]["stages"]
    out["stages_ms"] = {k: median([x for run in runs for x in run["stages"][k]]) for k in stages}
    out["load_average"] = os.getloadavg()[0]
    return out


def table(results: dict[str, Any]) -> str:
    rows = [
        f"{'dim':>5} {'learner':<28} {'p50 ms':>8} {'p95 ms':>8} {'state B':>9} {'top-1':>6}",
    ]
    for dim, r in results.items():
        free, base = r["torch_free"], r["torch"]
        lines = [
            ("torch-free: fit (update)", free["fit_ms"], free["state_bytes"], None),
            ("torch-free: fit, CPU time", free["fit_cpu_ms"], free["state_bytes"], None),
            ("torch-free: learn()", free["learn_ms"], free["state_bytes"], None),
            ("torch-free: thumbs+learn+swap", free["chain_ms"], free["state_bytes"],
             free["held_out_top1"]),
            ("torch per_event: learn()", base["learn_ms"], base["state_bytes"], None),
            ("torch per_event: thumbs+l+s", base["chain_ms"], base["state_bytes"],
             base["held_out_top1"]),
        ]  # fmt: skip
        for name, ms, state, top1 in lines:
            acc = f"{top1:6.2f}" if top1 is not None else ""
            rows.append(
                f"{dim:>5} {name:<28} {ms['p50']:8.2f} {ms['p95']:8.2f} {state:>9} {acc:>6}"
            )
    return "\n".join(rows)


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--dims", default="576,4096", help="feature sizes to measure")
    parser.add_argument("--history", type=int, default=200, help="events learned before timing")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # dim,history,reps
    args = parser.parse_args()
    if args.worker:  # inside the torch-blocked subprocess
        dim, history, reps = (int(x) for x in args.worker.split(","))
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(torch_free(dim, history, reps, Path(tmp))))
        return
    from _common import set_threads

    set_threads(args.threads)
    reps = 10 if args.quick else 40
    results: dict[str, Any] = {}
    for dim in (int(x) for x in args.dims.split(",")):
        # The machine's load drifts over minutes: the torch-free runs (half the
        # events each) bracket the torch baseline, and their samples are pooled.
        before = run_torch_free_blocked(dim, args.history, reps // 2)
        with tempfile.TemporaryDirectory() as tmp:
            base = with_torch(dim, args.history, reps, Path(tmp))
        after = run_torch_free_blocked(dim, args.history, reps - reps // 2)
        free = pooled(before, after)
        assert not free["torch_imported"]
        results[str(dim)] = {"torch_free": free, "torch": base}
        stages = ", ".join(f"{k} {v:.1f}" for k, v in free["stages_ms"].items())
        print(f"{dim}-d torch-free update, median ms per stage: {stages}")
        print(
            f"{dim}-d first torch-free update in a fresh process: "
            f"{free['first_update_in_fresh_process_ms']:.1f} ms "
            f"(fit {free['first_update_fit_ms']:.1f} ms over {free['events_in_fit']} events); "
            f"head {free['head_bytes']} B, ONNX {free['onnx_bytes']} B; "
            f"load average {free['load_average']:.1f} on {os.cpu_count()} CPUs",
            flush=True,
        )
    print(table(results))
    free = {d: r["torch_free"] for d, r in results.items()}
    emit(
        {
            "benchmark": "personal_update",
            "history": args.history,
            "target_ms": TARGET_MS,
            "results": results,
            "update_ms_p50_torch_free": {d: f["fit_ms"]["p50"] for d, f in free.items()},
            "update_cpu_ms_p50_torch_free": {d: f["fit_cpu_ms"]["p50"] for d, f in free.items()},
            "meets_target": {
                d: f["fit_ms"]["p50"] <= TARGET_MS and f["state_bytes"] <= STATE_BYTES
                for d, f in free.items()
            },
        }
    )


if __name__ == "__main__":
    main()
