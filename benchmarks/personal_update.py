"""Per-event personal update at 200 and 1,000 events of history: the torch-free learner.

Targets: a user's update costs <= 10 ms per event at 200 events of history on
one thread, with torch absent (issue 12), at 576-d and at 4096-d, and <= 20 ms
at 1,000 events; the rows a user's learner holds stay <= 64 MB at 1,000 events
(issue 23); the per-user state fits in 64 KB.

Every learner runs the app's real chain, ``PersonalRanker.thumbs`` then
``PersonalRanker.learn`` (which saves a registry version and hot-swaps the
runtime to it), on the same synthetic stream: K=8 candidates per shown set,
float16 vectors (last token and mean, 576-d and 4096-d, as central sends them),
texts and scalars, a planted direction marking the good candidate (the same
for every stream: a taste the population shares); the user gives one thumb per
set (up on the good one or down on another, at random). Each user first learns
a history of 200 (or 1,000) events, so every timed update is a steady-state one.

- torch-free learners (``edge.app.taste``), each run in a subprocess where
  ``sys.modules["torch"] = None``, in two halves interleaved with the others:
  - "whole rows": ``TasteConfig(reduce_above=None)``, every part at full
    width (the learner before issue 23);
  - "random basis": the default; at 4096-d the vector parts are fitted in a
    seeded random basis of 256 directions (no global ranker ships one);
  - "population basis": the default, with a global ranker that ships a basis
    fitted on 1,000 other sets of the stream (``population_basis``: PCA of the
    within-set deviations) and whose own head is zero, so that it ranks
    nothing and only the basis differs.
  At 576-d no part is wider than ``reduce_above``: the default is the whole
  learner, measured once. The update is timed in stages: adding the new set
  to the rows (the projection, in a basis), the fit itself, folding the head
  back to raw weights, composing the ONNX ranker, the registry save (three
  fsynced files) and the hot swap, each in wall time and in the process's CPU
  time (which a busy machine does not inflate); "update" is the first three. The
  first update in a fresh process (the rows rebuilt from the store) is
  reported apart.
- torch (baseline, at the first history only): ``learner=LearnerConfig.per_event()``,
  the fastest torch configuration (``benchmarks/p6_learning_latency.py``), in
  this process.

Rows held: the bytes of a user's rows and heads' state in the learner's
memory (capacity included; a shared basis apart). State bytes: the registry
weights file a version adds (what the next update starts from). Held-out
top-1 on 1,000 fresh planted sets after the timed events checks what each
learner learned.

    python benchmarks/personal_update.py [--quick] [--dims 576,4096] [--history 200,1000]
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
TARGET_MS = {200: 10.0, 1000: 20.0}  # per-event update, torch-free, by events of history
ROWS_BYTES = 64 * 2**20  # rows a user's learner holds at 1,000 events
STATE_BYTES = 64 * 1024  # per-user state on disk
HELD_OUT = 1000  # fresh sets the learned rankers are scored on
POPULATION = 1000  # other sets the shipped basis is fitted on
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
# The torch-free learners compared, by name: their TasteConfig fields, and whether a
# global ranker ships the population's basis.
LEARNERS: dict[str, dict[str, Any]] = {
    "whole rows": {"config": {"reduce_above": None}, "shipped": False},
    "random basis": {"config": {}, "shipped": False},
    "population basis": {"config": {}, "shipped": True},
}


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


def held_out_top1(me: Any, dim: int, sets: int = HELD_OUT) -> float:
    feed = Feed(dim, seed=555)
    hits = [
        int(me.rank(g).order[0]) == good for g, good in (feed.generation() for _ in range(sets))
    ]
    return float(np.mean(hits))


def stats(ms: list[float]) -> dict[str, float]:
    return {"p50": median(ms), "p95": float(np.percentile(ms, 95)), "max": max(ms)}


# The stages of the torch-free chain, timed by wrapping what the chain calls.
STAGES = (
    ("FeedbackStore", "thumbs", "feedback event (SQLite commit)"),
    ("FeedbackStore", "events", "read new events"),
    ("TasteFit", "add_set", "add the set to the rows"),
    ("TasteFit", "fit", "fit"),
    ("TasteFit", "head", "fold the head to raw weights"),
    ("compose", "compose_ranker", "compose ONNX (global + head)"),
    ("Registry", "save", "registry save (3 fsynced files)"),
    ("PersonalRanker", "_swap", "hot swap (reopen, verify, new session)"),
)
UPDATE_STAGES = ("add the set to the rows", "fit", "fold the head to raw weights")
CPU = ", CPU"  # a stage's CPU time is recorded under its label plus this


def stage_timer(totals: dict[str, list[float]]) -> Callable[[], None]:
    """Time the torch-free learner's stages by wrapping what it calls; returns undo."""
    import edge.app.taste.compose as compose_mod  # the learner imports it at its first save
    from edge.app.personal import PersonalRanker
    from edge.app.registry import Registry
    from edge.app.store import FeedbackStore
    from edge.app.taste import TasteFit

    owners: dict[str, Any] = {
        "FeedbackStore": FeedbackStore,
        "TasteFit": TasteFit,
        "compose": compose_mod,
        "Registry": Registry,
        "PersonalRanker": PersonalRanker,
    }
    originals = [(owners[owner], attr, getattr(owners[owner], attr)) for owner, attr, _ in STAGES]
    for (_, _, label), (owner, attr, fn) in zip(STAGES, originals, strict=True):
        setattr(owner, attr, _timing(fn, label, totals))

    def undo() -> None:
        for owner, attr, fn in originals:
            setattr(owner, attr, fn)

    return undo


def _timing(fn: Callable[..., Any], label: str, totals: dict[str, list[float]]) -> Any:
    """``fn`` recording its wall time under ``label`` and its CPU time under ``label
    + CPU`` (what a busy machine does not inflate), in ms."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started, cpu = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            totals.setdefault(label, []).append(1000 * (time.perf_counter() - started))
            totals.setdefault(label + CPU, []).append(1000 * (time.process_time() - cpu))

    return wrapper


# -- the learners ---------------------------------------------------------------------
def ship_population_basis(root: Path, dim: int, basis_file: Path) -> None:
    """A global ranker "chat" whose head is zero and whose archive ships the basis."""
    from edge.app.registry import Registry
    from edge.app.taste import TasteHead, compose_ranker
    from edge.app.taste.basis import attach_basis

    with np.load(basis_file) as npz:
        basis = {part: npz[part] for part in npz.files}
    head = TasteHead.zeros(dim, ("last", "mean", "signals"))
    Registry(root / "rankers").save_global(
        "chat", compose_ranker(head), weights=attach_basis(head.to_bytes(), basis)
    )


def fit_population_basis(dim: int, path: Path) -> float:
    """The population's basis (other sets of the stream) saved to ``path``; seconds."""
    from edge.app.taste import TasteConfig
    from edge.app.taste.basis import population_basis

    feed = Feed(dim, seed=77)
    sets = []
    for _ in range(POPULATION):
        g, _ = feed.generation()
        sets.append({"last": g.features, "mean": np.stack([c.mean_feature for c in g.candidates])})
    started = time.perf_counter()
    basis = population_basis(sets, TasteConfig().basis_rank)
    seconds = time.perf_counter() - started
    np.savez(path, **basis)
    return seconds


def torch_free(spec: dict[str, Any], root: Path) -> dict[str, Any]:
    """One torch-free learner on the stream; meant to run where torch cannot be imported."""
    from edge.app.personal import PersonalRanker
    from edge.app.taste import TasteConfig, TasteHead, memory

    dim, history, reps = spec["dim"], spec["history"], spec["reps"]
    learner = LEARNERS[spec["learner"]]
    if learner["shipped"]:
        ship_population_basis(root, dim, Path(spec["basis_file"]))
    config = TasteConfig(**learner["config"])
    me = PersonalRanker(None, root, user="alice", name="chat", learner=config)  # type: ignore[arg-type]
    feed = Feed(dim, seed=11)
    seed_history(me, feed, history)
    totals: dict[str, list[float]] = {}
    undo = stage_timer(totals)
    try:
        ms, reports = timed_steps(me, feed, reps, seed=100)
    finally:
        undo()
    (held,) = memory.ROWS.values()
    rows_bytes, bases = held.fit.nbytes, held.fit.bases
    update = np.sum([totals[label][-reps:] for label in UPDATE_STAGES], axis=0)
    update_cpu = np.sum([totals[label + CPU][-reps:] for label in UPDATE_STAGES], axis=0)
    memory.ROWS.clear()  # a fresh process: rows rebuilt from the store
    step = Step(me, feed, np.random.default_rng(7))
    started = time.perf_counter()
    first = step()
    first_ms = 1000 * (time.perf_counter() - started)
    weights = me.registry.load_weights("alice", "chat") or b""
    model = me.registry.load_model("alice", "chat")
    result = {
        "samples": {
            "chain_ms": ms,
            "update_ms": update.tolist(),
            "update_cpu_ms": update_cpu.tolist(),
            "fit_ms": [1000 * r.fit.seconds for r in reports],
            "fit_cpu_ms": [1000 * r.fit.cpu_seconds for r in reports],
            "learn_ms": [1000 * r.seconds for r in reports],
        },
        "stages": {k: v[-reps:] for k, v in totals.items()},
        "first_update_in_fresh_process_ms": first_ms,
        "first_update_fit_ms": 1000 * first.fit.seconds,
        "events_in_fit": int(me.registry.current("alice", "chat").metadata["events"]),
        "rows_bytes": rows_bytes,
        "basis": {p: b.describe() for p, b in bases.items()},
        "basis_bytes": sum(b.matrix.nbytes for b in bases.values()),
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
        "held_out_top1": held_out_top1(me, dim, sets=200),
    }
    me.close()
    return result


def run_torch_free_blocked(spec: dict[str, Any]) -> dict[str, Any]:
    """torch_free() in a fresh interpreter where importing torch fails."""
    code = (
        "import sys, json, runpy\n"
        "sys.modules['torch'] = None\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        f"sys.argv = [{str(Path(__file__))!r}, '--worker', {json.dumps(spec)!r}]\n"
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
    out["rows_bytes"] = max(run["rows_bytes"] for run in runs)
    out["load_average"] = os.getloadavg()[0]
    return out


def table(results: dict[str, Any]) -> str:
    header = (
        f"{'dim':>5} {'events':>6} {'learner':<17} {'update p50':>10} {'p95':>6} {'CPU p50':>7} "
        f"{'learn p50':>9} {'chain p50':>9} {'rows MB':>8} {'state B':>8} {'top-1':>6}"
    )
    lines = [header]
    for dim, by_history in results.items():
        for history, learners in by_history.items():
            for name, r in learners.items():
                if name == "torch per_event":
                    lines.append(
                        f"{dim:>5} {history:>6} {name:<17} {'':>10} {'':>6} {'':>7} "
                        f"{r['learn_ms']['p50']:9.1f} {r['chain_ms']['p50']:9.1f} {'':>8} "
                        f"{r['state_bytes']:>8} {r['held_out_top1']:6.3f}"
                    )
                    continue
                lines.append(
                    f"{dim:>5} {history:>6} {name:<17} {r['update_ms']['p50']:10.2f} "
                    f"{r['update_ms']['p95']:6.2f} {r['update_cpu_ms']['p50']:7.2f} "
                    f"{r['learn_ms']['p50']:9.1f} {r['chain_ms']['p50']:9.1f} "
                    f"{r['rows_bytes'] / 2**20:8.1f} {r['state_bytes']:>8} "
                    f"{r['held_out_top1']:6.3f}"
                )
    return "\n".join(lines)


def describe(free: dict[str, Any]) -> str:
    """A torch-free result's line beside the table: rebuild, basis, sizes, load."""
    return (
        f"  first update in a fresh process {free['first_update_in_fresh_process_ms']:.0f} "
        f"ms (fit {free['first_update_fit_ms']:.0f} ms over {free['events_in_fit']} "
        f"events); basis {free['basis'] or 'none'} ({free['basis_bytes'] / 2**20:.1f} MB, "
        f"shared); head {free['head_bytes']} B, ONNX {free['onnx_bytes']} B; load "
        f"average {free['load_average']:.1f} on {os.cpu_count()} CPUs"
    )


def learners_at(dim: int) -> list[str]:
    """The learners worth comparing at ``dim``: one where nothing is reduced."""
    from edge.app.taste import TasteConfig

    reduce_above = TasteConfig().reduce_above
    if reduce_above is None or dim <= reduce_above:
        return ["whole rows"]
    return list(LEARNERS)


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--dims", default="576,4096", help="feature sizes to measure")
    parser.add_argument(
        "--history", default="200,1000", help="events learned before timing (comma list)"
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # a JSON spec
    args = parser.parse_args()
    if args.worker:  # inside the torch-blocked subprocess
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(torch_free(json.loads(args.worker), Path(tmp))))
        return
    from _common import set_threads

    set_threads(args.threads)
    reps = 10 if args.quick else 40
    histories = [int(x) for x in args.history.split(",")]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dim in (int(x) for x in args.dims.split(",")):
            names = learners_at(dim)
            basis_file = Path(tmp) / f"basis-{dim}.npz"
            if "population basis" in names:
                seconds = fit_population_basis(dim, basis_file)
                print(f"{dim}-d population basis from {POPULATION} sets: {seconds:.1f} s")
            results[str(dim)] = {}
            for history in histories:
                spec = {"dim": dim, "history": history, "basis_file": str(basis_file)}
                # The machine's load drifts over minutes: each learner runs in two
                # halves, interleaved with the others (and around the torch
                # baseline), and its samples are pooled.
                halves: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
                for half, count in enumerate((reps // 2, reps - reps // 2)):
                    for name in names if half == 0 else names[::-1]:
                        run = {**spec, "learner": name, "reps": count}
                        halves[name].append(run_torch_free_blocked(run))
                    if half == 0 and history == histories[0]:
                        base = with_torch(dim, history, reps, Path(tmp))
                by_name = {name: pooled(*runs) for name, runs in halves.items()}
                for name, free in by_name.items():
                    assert not free["torch_imported"]
                    stages = ", ".join(
                        f"{k} {v:.1f}" for k, v in free["stages_ms"].items() if not k.endswith(CPU)
                    )
                    print(f"{dim}-d, {history} events, {name}: median ms per stage: {stages}")
                    print(describe(free), flush=True)
                if history == histories[0]:
                    by_name["torch per_event"] = base
                results[str(dim)][str(history)] = by_name
    print(table(results))
    free_default = {
        f"{d}/{h}": learners["random basis" if "random basis" in learners else "whole rows"]
        for d, by_history in results.items()
        for h, learners in by_history.items()
    }
    emit(
        {
            "benchmark": "personal_update",
            "history": histories,
            "target_ms": TARGET_MS,
            "results": results,
            "update_ms_p50_default": {k: f["update_ms"]["p50"] for k, f in free_default.items()},
            "update_cpu_ms_p50_default": {
                k: f["update_cpu_ms"]["p50"] for k, f in free_default.items()
            },
            "rows_mb_default": {k: f["rows_bytes"] / 2**20 for k, f in free_default.items()},
            "meets_target": {
                k: f["update_ms"]["p50"] <= TARGET_MS.get(int(k.split("/")[1]), TARGET_MS[200])
                and f["state_bytes"] <= STATE_BYTES
                and (int(k.split("/")[1]) < 1000 or f["rows_bytes"] <= ROWS_BYTES)
                for k, f in free_default.items()
            },
        }
    )


if __name__ == "__main__":
    main()
