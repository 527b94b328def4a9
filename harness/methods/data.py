"""Stacking cached records into the arrays every method reads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.collect import Split
from harness.tasks import Problem


@dataclass(frozen=True)
class Pool:
    """The candidates of one split of one (model, task), stacked."""

    problems: list[Problem]  # in cache order
    prompts: list[str]  # the question text shown to the text reward model
    instruction: np.ndarray  # (G, L, d) float32
    candidates: np.ndarray  # (G, K, L, d) float32
    labels: np.ndarray  # (G, K) float32
    logprobs: np.ndarray  # (G, K) mean token log-probability
    texts: list[list[str]]  # (G, K) responses
    answers: list[list[str]]  # (G, K) extracted answers
    greedy: np.ndarray  # (G,) greedy label
    beam: np.ndarray | None  # (G,) beam label, None when beam search was skipped
    gen_seconds: float  # total generation time of these problems

    @property
    def size(self) -> int:
        return len(self.problems)

    @property
    def k(self) -> int:
        return int(self.labels.shape[1]) if self.size else 0

    def layer(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(G, d) instruction and (G, K, d) candidate features at one stored layer."""
        return self.instruction[:, index], self.candidates[:, :, index]

    def subset(self, rows: np.ndarray) -> Pool:
        """The same pool restricted to some problems (for data-size ablations)."""
        pick = [int(r) for r in rows]
        return Pool(
            problems=[self.problems[r] for r in pick],
            prompts=[self.prompts[r] for r in pick],
            instruction=self.instruction[rows],
            candidates=self.candidates[rows],
            labels=self.labels[rows],
            logprobs=self.logprobs[rows],
            texts=[self.texts[r] for r in pick],
            answers=[self.answers[r] for r in pick],
            greedy=self.greedy[rows],
            beam=None if self.beam is None else self.beam[rows],
            gen_seconds=self.gen_seconds,
        )


def load_pool(split: Split, which: str) -> Pool:
    """Stacks the cached train or test records of `split`."""
    problems = split.train if which == "train" else split.test
    records = [split.cache.load(p.uid) for p in problems]
    has_beam = bool(records) and all(r.beam is not None for r in records)
    return Pool(
        problems=problems,
        prompts=[p.question for p in problems],
        instruction=np.stack([r.instruction for r in records]).astype(np.float32),
        candidates=np.stack([r.candidates for r in records]).astype(np.float32),
        labels=np.stack([r.labels for r in records]),
        logprobs=np.stack([r.logprobs for r in records]),
        texts=[r.texts for r in records],
        answers=[r.answers for r in records],
        greedy=np.array([r.greedy[1] for r in records], dtype=np.float32),
        beam=np.array([r.beam[1] for r in records], dtype=np.float32) if has_beam else None,
        gen_seconds=float(sum(r.seconds for r in records)),
    )


def concat_pools(pools: list[Pool]) -> Pool:
    """Several tasks' pools as one (same model and K): the multi-task training set."""
    return Pool(
        problems=[p for pool in pools for p in pool.problems],
        prompts=[p for pool in pools for p in pool.prompts],
        instruction=np.concatenate([p.instruction for p in pools]),
        candidates=np.concatenate([p.candidates for p in pools]),
        labels=np.concatenate([p.labels for p in pools]),
        logprobs=np.concatenate([p.logprobs for p in pools]),
        texts=[t for pool in pools for t in pool.texts],
        answers=[a for pool in pools for a in pool.answers],
        greedy=np.concatenate([p.greedy for p in pools]),
        beam=None,
        gen_seconds=sum(p.gen_seconds for p in pools),
    )
