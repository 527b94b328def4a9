"""A correctness task for the forgetting check, read from the quality harness's cache.

The harness (``python -m ranker_eval.cli --phase generate``) caches, per arithmetic
problem, K candidates of the same default model with features at several layers
and a programmatic right/wrong label. A user whose ranker first learned to pick
right answers must keep that skill while learning their taste; this module turns
those records into prelude feedback (thumbs on every candidate) and measures
held-out top-1 accuracy.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.app.personal import PersonalRanker
from edge.runtime.scoring import Ranking
from edge.runtime.types import Candidate, Generation

__all__ = [
    "CorrectnessSet",
    "accuracy",
    "find_correctness",
    "first_sample_accuracy",
    "load_correctness",
    "teach",
]


@dataclass(frozen=True)
class CorrectnessSet:
    """Problems with labelled candidates at the pool's feature layer."""

    instructions: np.ndarray  # (N, d) float32
    candidates: np.ndarray  # (N, K, d) float32
    labels: np.ndarray  # (N, K) 1.0 right / 0.0 wrong

    def __len__(self) -> int:
        return len(self.labels)

    def split(self, n_train: int) -> tuple[CorrectnessSet, CorrectnessSet]:
        """First ``n_train`` problems for teaching, the rest held out."""
        a, b = slice(0, n_train), slice(n_train, None)
        return (
            CorrectnessSet(self.instructions[a], self.candidates[a], self.labels[a]),
            CorrectnessSet(self.instructions[b], self.candidates[b], self.labels[b]),
        )


def find_correctness(root: Path, model: str, task: str = "math") -> Path | None:
    """The harness cache directory of ``task`` for ``model``, if one exists."""
    base = root / model
    found = sorted(base.glob(f"{task}-k*")) if base.exists() else []
    return found[0] if found else None


def load_correctness(directory: Path, layer: int, limit: int | None = None) -> CorrectnessSet:
    """Complete records (``.json`` present) at hidden-state index ``layer``."""
    layers = list(json.loads((directory / "settings.json").read_text())["layers"])
    if layer not in layers:
        raise ValueError(f"{directory} has layers {layers}, not {layer}")
    at = layers.index(layer)
    uids = sorted(p.stem for p in directory.glob("*.json") if p.name != "settings.json")
    uids = [u for u in uids if (directory / f"{u}.npz").exists()][:limit]
    insts, cands, labels = [], [], []
    for uid in uids:
        with np.load(directory / f"{uid}.npz", allow_pickle=False) as arrays:
            insts.append(arrays["instruction"][at].astype(np.float32))
            cands.append(arrays["candidates"][:, at].astype(np.float32))
            labels.append(arrays["labels"].astype(np.float32))
    return CorrectnessSet(np.stack(insts), np.stack(cands), np.stack(labels))


def teach(device: PersonalRanker, data: CorrectnessSet) -> None:
    """Record every problem as shown and thumb each candidate by its correctness."""
    for i in range(len(data)):
        set_id = f"correctness-{i}"
        device.store.record_shown(
            device.user, set_id, data.instructions[i], data.candidates[i], task=device.name
        )
        for k, label in enumerate(data.labels[i]):
            device.store.thumbs(device.user, set_id, k, bool(label > 0.5))


def _generation(data: CorrectnessSet, i: int) -> Generation:
    cands = tuple(
        Candidate(k, "", (), "eos", 0.0, feat) for k, feat in enumerate(data.candidates[i])
    )
    return Generation("", data.instructions[i], cands)


def accuracy(rank: Callable[[Generation], Ranking], data: CorrectnessSet) -> float:
    """Share of problems (with at least one right answer) whose top pick is right."""
    solvable = np.flatnonzero(data.labels.max(1) > 0.5)
    right = [data.labels[i, rank(_generation(data, i)).best] > 0.5 for i in solvable]
    return float(np.mean(right)) if right else float("nan")


def first_sample_accuracy(data: CorrectnessSet) -> float:
    """The same rate for the first sample (no ranker)."""
    solvable = data.labels.max(1) > 0.5
    return float((data.labels[solvable, 0] > 0.5).mean())
