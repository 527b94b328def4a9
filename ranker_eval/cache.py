"""The candidate cache: one .npz (features, labels) and one .json (texts) per problem.

Every method is scored on exactly these candidates, so they are generated
once and reread. Per-problem files make generation resumable (a budget cut
or a crash loses at most one problem) and never involve pickle: arrays are
plain .npz loaded with allow_pickle=False, texts are JSON. The directory
records the generation settings; a mismatch means a different experiment,
and the stale directory is refused rather than silently mixed.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ranker_eval.generation import GreedyCandidate, ProblemRecord

_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class CacheKey:
    """What makes two candidate pools comparable."""

    model: str  # model name as loaded (e.g. SmolLM2-135M-Instruct.Q4_1)
    task: str  # task id
    k: int  # candidates per problem
    temperature: float  # sampling temperature
    max_new_tokens: int  # token limit per response
    seed: int  # base seed
    layers: tuple[int, ...]  # hidden-state indices stored, in order
    # central's weight format (LoadedModel.weights_format): int8 and fp32 features of the
    # same weights differ, so their pools are kept apart; pools from before it are float32
    weights: str = "float32"

    def directory(self, root: Path) -> Path:
        suffix = "" if self.weights == "float32" else f"-{self.weights}"
        return (
            root
            / f"{_SLUG.sub('_', self.model)}{suffix}"
            / f"{self.task}-k{self.k}-t{self.temperature}-s{self.seed}"
        )


# Representation v2 arrays; a record cached before them loads with None in their place.
_V2_ARRAYS = ("means", "cumulative", "entropies", "num_tokens")


def _v2_arrays(record: ProblemRecord) -> dict[str, np.ndarray | None]:
    return {name: getattr(record, name) for name in _V2_ARRAYS}


def _greedy_arrays(greedy: GreedyCandidate | None) -> dict[str, np.ndarray]:
    if greedy is None:
        return {}
    scalars = [greedy.cumulative, greedy.entropy, greedy.num_tokens]
    return {
        "greedy_last": greedy.last,
        "greedy_mean": greedy.mean,
        "greedy_scalars": np.array(scalars, dtype=np.float64),
    }


def _greedy_candidate(arrays: Any, texts: dict[str, Any]) -> GreedyCandidate | None:
    """The greedy candidate of a record; None when it was cached before they were kept."""
    if "greedy_last" not in arrays or "greedy_answer" not in texts:
        return None
    cumulative, entropy, num_tokens = arrays["greedy_scalars"].tolist()
    return GreedyCandidate(
        answer=texts["greedy_answer"],
        last=arrays["greedy_last"],
        mean=arrays["greedy_mean"],
        cumulative=float(cumulative),
        entropy=float(entropy),
        num_tokens=int(num_tokens),
    )


class CandidateCache:
    """Reads and writes the per-problem records of one (model, task, settings)."""

    def __init__(self, root: Path, key: CacheKey) -> None:
        self.key = key
        self.path = key.directory(root)
        self.path.mkdir(parents=True, exist_ok=True)
        meta = self.path / "settings.json"
        wanted = {**asdict(key), "layers": list(key.layers)}
        if meta.exists():
            stored = json.loads(meta.read_text())
            # Pools from before the token limit was recorded used the task's
            # default limit, which is what a key without a plan override holds.
            stored.setdefault("max_new_tokens", key.max_new_tokens)
            stored.setdefault("weights", "float32")  # pools from before weight formats
            if stored != wanted:
                raise ValueError(f"{self.path} holds candidates from other settings")
        else:
            meta.write_text(json.dumps(wanted, indent=1))

    def has(self, uid: str) -> bool:
        return (self.path / f"{uid}.json").exists()

    def has_greedy_candidate(self, uid: str) -> bool:
        """The record keeps the greedy response's features (records from before do not)."""
        return "greedy_answer" in json.loads((self.path / f"{uid}.json").read_text())

    def save(self, record: ProblemRecord) -> None:
        """Arrays first, texts last: the .json marks a complete record."""
        arrays = self.path / f"{record.uid}.npz"
        tmp = arrays.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            instruction=record.instruction,
            candidates=record.candidates,
            labels=record.labels,
            logprobs=record.logprobs,
            **{name: value for name, value in _v2_arrays(record).items() if value is not None},
            **_greedy_arrays(record.greedy_candidate),
        )
        os.replace(tmp, arrays)
        texts = {
            "uid": record.uid,
            "texts": record.texts,
            "answers": record.answers,
            "greedy": list(record.greedy),
            "beam": list(record.beam) if record.beam else None,
            "seconds": record.seconds,
        }
        if record.greedy_candidate is not None:
            texts["greedy_answer"] = record.greedy_candidate.answer
        tmp_json = self.path / f"{record.uid}.json.tmp"
        tmp_json.write_text(json.dumps(texts))
        os.replace(tmp_json, self.path / f"{record.uid}.json")

    def load(self, uid: str) -> ProblemRecord:
        texts = json.loads((self.path / f"{uid}.json").read_text())
        with np.load(self.path / f"{uid}.npz", allow_pickle=False) as arrays:
            return ProblemRecord(
                uid=uid,
                instruction=arrays["instruction"],
                candidates=arrays["candidates"],
                labels=arrays["labels"],
                logprobs=arrays["logprobs"],
                **{name: arrays.get(name) for name in _V2_ARRAYS},
                texts=texts["texts"],
                answers=texts["answers"],
                greedy=(texts["greedy"][0], bool(texts["greedy"][1])),
                beam=(texts["beam"][0], bool(texts["beam"][1])) if texts["beam"] else None,
                seconds=float(texts["seconds"]),
                greedy_candidate=_greedy_candidate(arrays, texts),
            )
