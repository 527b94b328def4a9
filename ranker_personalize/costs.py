"""On-device costs, measured on this CPU: learning time, size on disk, runtime memory.

Memory is measured in a fresh subprocess that imports only what an app ships
(numpy, onnxruntime, ``edge.runtime.scoring``: no torch), so the number is the
resident-set growth from loading the rankers, not this process's history.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import numpy as np

from edge.app.checkpoint import Checkpoint
from edge.training.rankers import count_parameters, from_checkpoint
from ranker_personalize.pool import Pool
from ranker_personalize.simulate import Device, SimConfig, generation, learner_config, run_user
from ranker_personalize.users import SimUser

__all__ = ["measure_costs", "runtime_memory"]

_MEMORY_SCRIPT = """
import json, sys, time
import numpy as np
import edge.runtime.scoring as rt

def rss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

paths = json.loads(sys.argv[1])
d = int(sys.argv[2])
rng = np.random.default_rng(0)
inst = rng.standard_normal(d).astype(np.float32)
cand = rng.standard_normal((8, d)).astype(np.float32)
rt.RankingSession.load(paths[0]).rank(inst, cand)  # warm the onnxruntime library itself
before = rss_kib()
rankers = [rt.Ranker(p) for p in paths]
for r in rankers:
    r.rank(inst, cand)
after = rss_kib()
start = time.perf_counter()
for _ in range(20):
    for r in rankers:
        r.rank(inst, cand)
per_rank = (time.perf_counter() - start) / (20 * len(rankers))
print(json.dumps({"rss_before_kib": before, "rss_after_kib": after, "rank_ms_k8": per_rank * 1e3}))
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


def _single_event_learns(
    user: SimUser, train: Pool, home: Path, config: SimConfig, seed: int, repeats: int
) -> list[float]:
    """Wall time of learn() right after one new event, on a user with history."""
    rng = np.random.default_rng(seed + 99)
    device = Device(
        cast(Any, None), home, user.name, config.ranker_name, learner=learner_config(config, seed)
    )
    times: list[float] = []
    try:
        for i in rng.permutation(len(train))[:repeats]:
            gen = generation(train, int(i))
            shown = device.show(gen)
            reaction = user.react(gen.texts, shown.order, rng)
            if reaction.kind == "thumb":
                device.thumbs(shown, reaction.candidate, up=reaction.up)
            else:
                device.pick(shown, reaction.candidate, list(reaction.rejected))
            start = time.perf_counter()
            device.learn()
            times.append(time.perf_counter() - start)
    finally:
        device.close()
    return times


def measure_costs(
    user: SimUser,
    train: Pool,
    test: Pool,
    work: Path,
    config: SimConfig,
    model_paths: list[Path],
    *,
    history: int = 200,
    repeats: int = 10,
) -> dict[str, Any]:
    """Per-event learning time after ``history`` events, sizes, and runtime memory."""
    home = work / "costs" / user.name
    sim = SimConfig(**{**config.__dict__, "budgets": (history,), "update_every": history})
    run_user(user, train, test, home, 0, sim)
    times = _single_event_learns(user, train, home, config, 0, repeats)
    device = Device(cast(Any, None), home, user.name, config.ranker_name)
    try:
        info = device.registry.current(user.name, config.ranker_name)
        directory = device.registry.model_path(user.name, config.ranker_name).parent
        weights = device.registry.load_weights(user.name, config.ranker_name)
    finally:
        device.close()
    assert weights is not None
    params = count_parameters(from_checkpoint(Checkpoint.from_bytes(weights)))
    paths = (model_paths * 10)[:10]
    return {
        "learn_after_one_event_s": {
            "median": statistics.median(times),
            "min": min(times),
            "max": max(times),
            "repeats": len(times),
            "history_events": history,
            "replay_size": config.replay_size,
        },
        "onnx_bytes": (directory / info.model_file).stat().st_size,
        "weights_bytes": (directory / str(info.weights_file)).stat().st_size,
        "parameters": int(params),
        "memory_10_users": runtime_memory(paths, train.instructions.shape[1]),
        "distinct_models_loaded": len(set(paths)),
    }
