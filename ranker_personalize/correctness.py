"""A correctness task for the forgetting check, read from the quality harness's cache.

The harness (``python -m ranker_eval.cli --phase generate``) caches, per arithmetic
problem, K candidates of the same default model with features at several layers
(last-token and mean vectors), their texts and scalars, and a programmatic
right/wrong label. A user whose ranker first learned to pick right answers must
keep that skill while learning their taste; this module turns those records into
generations as the app would see them, teaches them as feedback (on each
problem the user picks a right answer over the wrong ones), and measures
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

    generations: list[Generation]  # one per problem, as the edge client would hand it over
    labels: np.ndarray  # (N, K) 1.0 right / 0.0 wrong

    def __len__(self) -> int:
        return len(self.labels)

    def split(self, n_train: int) -> tuple[CorrectnessSet, CorrectnessSet]:
        """First ``n_train`` problems for teaching, the rest held out."""
        return (
            CorrectnessSet(self.generations[:n_train], self.labels[:n_train]),
            CorrectnessSet(self.generations[n_train:], self.labels[n_train:]),
        )


def find_correctness(root: Path, model: str, task: str = "math") -> Path | None:
    """The harness cache directory of ``task`` for ``model``, if one exists."""
    base = root / model
    found = sorted(base.glob(f"{task}-k*")) if base.exists() else []
    return found[0] if found else None


def _generation(arrays: dict[str, np.ndarray], texts: list[str], at: int, limit: int) -> Generation:
    """One cached problem at layer index ``at`` (token ids stand in by count)."""
    k = len(arrays["labels"])
    cands = tuple(
        Candidate(
            i,
            texts[i],
            (0,) * int(arrays["num_tokens"][i]),
            "length" if int(arrays["num_tokens"][i]) >= limit else "eos",
            float(arrays["cumulative"][i]),
            arrays["candidates"][i, at].astype(np.float32),
            mean_feature=arrays["means"][i, at].astype(np.float32),
            mean_entropy=float(arrays["entropies"][i]),
        )
        for i in range(k)
    )
    return Generation("", arrays["instruction"][at].astype(np.float32), cands)


def load_correctness(directory: Path, layer: int, limit: int | None = None) -> CorrectnessSet:
    """Complete records (``.json`` present) at hidden-state index ``layer``."""
    settings = json.loads((directory / "settings.json").read_text())
    layers = list(settings["layers"])
    if layer not in layers:
        raise ValueError(f"{directory} has layers {layers}, not {layer}")
    at = layers.index(layer)
    uids = sorted(p.stem for p in directory.glob("*.json") if p.name != "settings.json")
    uids = [u for u in uids if (directory / f"{u}.npz").exists()][:limit]
    generations, labels = [], []
    for uid in uids:
        texts = list(json.loads((directory / f"{uid}.json").read_text())["texts"])
        with np.load(directory / f"{uid}.npz", allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        missing = {"means", "cumulative", "entropies", "num_tokens"} - arrays.keys()
        if missing:
            raise ValueError(f"{directory} predates representation v2 (no {sorted(missing)})")
        generations.append(_generation(arrays, texts, at, int(settings["max_new_tokens"])))
        labels.append(arrays["labels"].astype(np.float32))
    if not generations:
        raise FileNotFoundError(f"no cached problems under {directory}")
    return CorrectnessSet(generations, np.stack(labels))


def teach(device: PersonalRanker, data: CorrectnessSet) -> int:
    """Show every problem that has right and wrong answers; the user picks a right one
    over the wrong ones. Returns the number of feedback events."""
    events = 0
    for generation, labels in zip(data.generations, data.labels, strict=True):
        right = np.flatnonzero(labels > 0.5)
        wrong = np.flatnonzero(labels <= 0.5)
        if len(right) and len(wrong):
            shown = device.show(generation)
            device.pick(shown, int(right[0]), [int(j) for j in wrong])
            events += 1
    return events


def accuracy(rank: Callable[[Generation], Ranking], data: CorrectnessSet) -> float:
    """Share of problems (with at least one right answer) whose top pick is right."""
    solvable = np.flatnonzero(data.labels.max(1) > 0.5)
    right = [data.labels[i, rank(data.generations[i]).best] > 0.5 for i in solvable]
    return float(np.mean(right)) if right else float("nan")


def first_sample_accuracy(data: CorrectnessSet) -> float:
    """The same rate for the first sample (no ranker)."""
    solvable = data.labels.max(1) > 0.5
    return float((data.labels[solvable, 0] > 0.5).mean())
