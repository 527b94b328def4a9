"""On-device costs, measured on this CPU: update time with and without torch, sizes, memory.

- torch-free: a user with 200 events of history on the study's pool gets one
  more event and ``learn()`` runs, in a fresh interpreter where importing torch
  fails (``sys.modules["torch"] = None``), so the figure is what an app without
  torch pays. The fit (the update proper) and the whole ``learn()`` (fit,
  compose the ONNX ranker, save a registry version) are reported apart;
- torch: the same with ``LearnerConfig.per_event()``, the fastest configuration
  of the torch learner (train a whole ranker, export ONNX, parity check, save);
- runtime memory in a fresh subprocess that imports only what an app ships
  (numpy, onnxruntime, ``edge.runtime.scoring``: no torch), so the number is the
  resident-set growth from loading the rankers, not this process's history.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import numpy as np

from ranker_personalize.pool import Pool, load_pool
from ranker_personalize.simulate import SimConfig, generation, record, taste_config
from ranker_personalize.users import SimUser

__all__ = ["measure_costs", "runtime_memory", "torch_free_updates", "torch_updates"]

_MEMORY_SCRIPT = """
import json, sys, time
import numpy as np
import edge.runtime.scoring as rt
from edge.runtime.signals import SIGNAL_NAMES
from edge.runtime.lexicon import LEXICON_WIDTH

def rss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

paths = json.loads(sys.argv[1])
d = int(sys.argv[2])
rng = np.random.default_rng(0)
inst = rng.standard_normal(d).astype(np.float32)
cand = rng.standard_normal((8, d)).astype(np.float32)
sig = np.zeros((8, len(SIGNAL_NAMES)), np.float32)
lex = np.zeros((8, LEXICON_WIDTH), np.float32)
def run(r):  # the optional inputs a graph does not declare are ignored
    return r.score(inst, cand, mean_candidates=cand, signals=sig, lexicon=lex)
run(rt.Ranker(paths[0]))  # warm the onnxruntime library itself
before = rss_kib()
rankers = [rt.Ranker(p) for p in paths]
for r in rankers:
    run(r)
after = rss_kib()
start = time.perf_counter()
for _ in range(20):
    for r in rankers:
        run(r)
per_rank = (time.perf_counter() - start) / (20 * len(rankers))
print(json.dumps({"rss_before_kib": before, "rss_after_kib": after, "rank_ms_k8": per_rank * 1e3}))
"""

# Runs torch_free_updates() where torch cannot be imported; prints its JSON.
_TORCH_FREE_SCRIPT = """
import json, sys
sys.modules["torch"] = None
from pathlib import Path
from ranker_personalize.costs import torch_free_updates
args = json.loads(sys.argv[1])
out = torch_free_updates(Path(args["pool"]), args["user"], args["history"], args["repeats"],
                         Path(args["home"]))
out["torch_importable"] = sys.modules.get("torch") is not None
print(json.dumps(out))
"""


def runtime_memory(model_paths: list[Path], feature_size: int) -> dict[str, float]:
    """RSS growth of a torch-free process that loads these ONNX rankers and ranks K=8."""
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, json.dumps([str(p) for p in model_paths]),
         str(feature_size)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    data = json.loads(out.stdout.strip().splitlines()[-1])
    data["rankers"] = len(model_paths)
    data["rss_growth_mib"] = (data["rss_after_kib"] - data["rss_before_kib"]) / 1024
    return data


def _stream(pool: Pool, seed: int) -> list[int]:
    """Prompt indices in a seeded order, as many passes as needed."""
    rng = np.random.default_rng(seed)
    return [int(i) for _ in range(8) for i in rng.permutation(len(pool))]


def torch_free_updates(
    pool_dir: Path, user_name: str, history: int, repeats: int, home: Path
) -> dict[str, Any]:
    """``history`` events learned, then ``repeats`` timed single-event updates (torch-free).

    The user learns after every event, as in the study, so the timed updates are
    the steady state: one new event on top of ``history``.
    """
    from edge.app.learning import LearnReport
    from edge.app.personal import PersonalRanker
    from edge.app.taste import TasteHead
    from ranker_personalize.study import split_pool

    train, _ = split_pool(load_pool(pool_dir))
    user = SimUser(user_name, user_name)
    sim = SimConfig()
    me = PersonalRanker(
        cast(Any, None), home, user.name, sim.ranker_name, learner=taste_config(sim)
    )
    rng = np.random.default_rng(1)
    fit_ms, fit_cpu_ms, learn_ms = [], [], []
    try:
        for n, i in enumerate(_stream(train, 0)[: history + repeats]):
            gen = generation(train, i)
            shown = me.show(gen)
            record(me, shown, user.react(gen.texts, shown.order, rng))
            report = me.learn()
            assert isinstance(report, LearnReport) and report.fit is not None
            if n >= history:
                fit_ms.append(1000 * report.fit.seconds)
                fit_cpu_ms.append(1000 * report.fit.cpu_seconds)
                learn_ms.append(1000 * report.seconds)
        weights = me.registry.load_weights(user.name, sim.ranker_name) or b""
        model = me.registry.load_model(user.name, sim.ranker_name)
    finally:
        me.close()
    return {
        "history_events": history,
        "repeats": repeats,
        "fit_ms": _stats(fit_ms),
        "fit_cpu_ms": _stats(fit_cpu_ms),
        "learn_ms": _stats(learn_ms),
        "head_bytes": TasteHead.from_bytes(weights).nbytes,
        "weights_bytes": len(weights),
        "onnx_bytes": len(model),
    }


def torch_updates(
    pool: Pool, user: SimUser, history: int, repeats: int, home: Path
) -> dict[str, Any]:
    """The torch learner (``LearnerConfig.per_event()``) on the same stream: ``history``
    events learned at once, then ``repeats`` timed single-event updates."""
    from edge.app.personal import PersonalRanker
    from edge.training.learner import LearnerConfig

    me = PersonalRanker(cast(Any, None), home, user.name, "chat", learner=LearnerConfig.per_event())
    rng = np.random.default_rng(1)
    learn_ms: list[float] = []
    try:
        for n, i in enumerate(_stream(pool, 0)[: history + repeats]):
            gen = generation(pool, i)
            shown = me.show(gen)
            record(me, shown, user.react(gen.texts, shown.order, rng))
            if n + 1 == history:
                me.learn()
            elif n >= history:
                start = time.perf_counter()
                me.learn()
                learn_ms.append(1000 * (time.perf_counter() - start))
        weights = me.registry.load_weights(user.name, "chat") or b""
    finally:
        me.close()
    return {"learn_ms": _stats(learn_ms), "weights_bytes": len(weights), "repeats": repeats}


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "p50": statistics.median(values),
        "p95": float(np.percentile(values, 95)),
        "max": max(values),
        "n": len(values),
    }


def measure_costs(
    pool_dir: Path,
    train: Pool,
    user: SimUser,
    model_paths: list[Path],
    *,
    history: int = 200,
    repeats: int = 30,
    torch_repeats: int = 10,
) -> dict[str, Any]:
    """Update cost at ``history`` events with and without torch, sizes, runtime memory."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory(prefix="personalize-costs-") as tmp:
        args = {"pool": str(pool_dir), "user": user.name, "history": history,
                "repeats": repeats, "home": str(Path(tmp) / "free")}  # fmt: skip
        out = subprocess.run(
            [sys.executable, "-c", _TORCH_FREE_SCRIPT, json.dumps(args)],
            check=True, capture_output=True, text=True, env=env,
        )  # fmt: skip
        free = json.loads(out.stdout.strip().splitlines()[-1])
        with_torch = torch_updates(train, user, history, torch_repeats, Path(tmp) / "torch")
    paths = (model_paths * 10)[:10]
    return {
        "torch_free": free,
        "torch": with_torch,
        "memory_10_users": runtime_memory(paths, train.instructions.shape[1]),
        "distinct_models_loaded": len(set(paths)),
        "load_average": os.getloadavg()[0],
    }
