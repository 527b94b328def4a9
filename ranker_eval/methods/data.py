"""Stacking cached records into the arrays every method reads."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np

from ranker_eval.collect import Split
from ranker_eval.generation import GreedyCandidate
from ranker_eval.tasks import Problem

T = TypeVar("T")


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
    # Representation v2, None for pools cached before it (see ranker_eval.generation)
    means: np.ndarray | None = None  # (G, K, L, d) float32 mean state over the response tokens
    cumulative: np.ndarray | None = None  # (G, K) summed token log-probability, temperature 1
    entropies: np.ndarray | None = None  # (G, K) mean next-token entropy, nats
    num_tokens: np.ndarray | None = None  # (G, K) tokens in each response
    # Each problem's greedy response as a candidate, and its text; None when any
    # record predates them (see `with_greedy_first`)
    greedy_candidates: list[GreedyCandidate] | None = None
    greedy_texts: list[str] | None = None

    @property
    def size(self) -> int:
        return len(self.problems)

    @property
    def k(self) -> int:
        return int(self.labels.shape[1]) if self.size else 0

    def layer(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(G, d) instruction and (G, K, d) candidate features at one stored layer."""
        return self.instruction[:, index], self.candidates[:, :, index]

    def mean_layer(self, index: int) -> np.ndarray:
        """(G, K, d) mean-over-response features at one stored layer."""
        if self.means is None:
            raise ValueError("this pool was cached before mean vectors were recorded")
        return self.means[:, :, index]

    def signals(self, subsets: np.ndarray | None = None) -> np.ndarray:
        """(G, k, S) on-device signals (edge.runtime.signals) of each problem's candidates.

        With ``subsets`` (G, k) the signals are those of each subset alone: the
        consensus columns compare a candidate with the others shown with it.
        """
        from edge.runtime.signals import SIGNAL_NAMES, text_signals

        if subsets is None:
            subsets = np.broadcast_to(np.arange(self.k), (self.size, self.k))
        if not self.size:
            return np.zeros((0, subsets.shape[1], len(SIGNAL_NAMES)), dtype=np.float32)

        def column(values: np.ndarray | None, g: int, pick: list[int]) -> list[float] | None:
            return None if values is None else [float(values[g, i]) for i in pick]

        rows = []
        for g, subset in enumerate(subsets):
            pick = [int(i) for i in subset]
            tokens = None if self.num_tokens is None else [int(self.num_tokens[g, i]) for i in pick]
            rows.append(
                text_signals(
                    [self.texts[g][i] for i in pick],
                    num_tokens=tokens,
                    cumulative_logprobs=column(self.cumulative, g, pick),
                    mean_entropies=column(self.entropies, g, pick),
                )
            )
        return np.stack(rows)

    def with_greedy_first(self) -> Pool:
        """The pool a request with ``greedy_first`` returns: candidate 0 is the greedy
        response, candidates 1..K-1 the samples as before."""
        if self.greedy_candidates is None or self.greedy_texts is None:
            raise ValueError("the pool predates greedy features: regenerate it (the cache resumes)")
        if (
            self.means is None
            or self.cumulative is None
            or self.entropies is None
            or self.num_tokens is None
        ):
            raise ValueError("the pool predates representation v2: regenerate it")
        greedy = self.greedy_candidates

        def first(values: np.ndarray, new: list) -> np.ndarray:
            out = values.copy()
            out[:, 0] = np.asarray(new, dtype=values.dtype)
            return out

        return replace(
            self,
            candidates=first(self.candidates, [g.last for g in greedy]),
            means=first(self.means, [g.mean for g in greedy]),
            labels=first(self.labels, list(self.greedy)),
            logprobs=first(self.logprobs, [g.cumulative / max(g.num_tokens, 1) for g in greedy]),
            cumulative=first(self.cumulative, [g.cumulative for g in greedy]),
            entropies=first(self.entropies, [g.entropy for g in greedy]),
            num_tokens=first(self.num_tokens, [g.num_tokens for g in greedy]),
            texts=[[t, *rest[1:]] for t, rest in zip(self.greedy_texts, self.texts, strict=True)],
            answers=[[g.answer, *rest[1:]] for g, rest in zip(greedy, self.answers, strict=True)],
        )

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
            means=None if self.means is None else self.means[rows],
            cumulative=None if self.cumulative is None else self.cumulative[rows],
            entropies=None if self.entropies is None else self.entropies[rows],
            num_tokens=None if self.num_tokens is None else self.num_tokens[rows],
            texts=[self.texts[r] for r in pick],
            answers=[self.answers[r] for r in pick],
            greedy=self.greedy[rows],
            beam=None if self.beam is None else self.beam[rows],
            gen_seconds=self.gen_seconds,
            greedy_candidates=_picked_items(self.greedy_candidates, pick),
            greedy_texts=_picked_items(self.greedy_texts, pick),
        )


def _picked_items(items: list[T] | None, rows: list[int]) -> list[T] | None:
    return None if items is None else [items[r] for r in rows]


def _stacked(arrays: list[np.ndarray | None], dtype: type) -> np.ndarray | None:
    """The records' arrays stacked, or None when any record predates them."""
    if not arrays or any(a is None for a in arrays):
        return None
    return np.stack([a for a in arrays if a is not None]).astype(dtype)


def _joined(arrays: list[np.ndarray | None]) -> np.ndarray | None:
    if not arrays or any(a is None for a in arrays):
        return None
    return np.concatenate([a for a in arrays if a is not None])


def load_pool(split: Split, which: str) -> Pool:
    """Stacks the cached train or test records of `split`."""
    problems = split.train if which == "train" else split.test
    records = [split.cache.load(p.uid) for p in problems]
    greedy = [r.greedy_candidate for r in records]
    has_beam = bool(records) and all(r.beam is not None for r in records)
    return Pool(
        problems=problems,
        prompts=[p.question for p in problems],
        instruction=np.stack([r.instruction for r in records]).astype(np.float32),
        candidates=np.stack([r.candidates for r in records]).astype(np.float32),
        labels=np.stack([r.labels for r in records]),
        logprobs=np.stack([r.logprobs for r in records]),
        means=_stacked([r.means for r in records], np.float32),
        cumulative=_stacked([r.cumulative for r in records], np.float32),
        entropies=_stacked([r.entropies for r in records], np.float32),
        num_tokens=_stacked([r.num_tokens for r in records], np.int64),
        texts=[r.texts for r in records],
        answers=[r.answers for r in records],
        greedy=np.array([r.greedy[1] for r in records], dtype=np.float32),
        beam=np.array([r.beam[1] for r in records], dtype=np.float32) if has_beam else None,
        gen_seconds=float(sum(r.seconds for r in records)),
        greedy_candidates=None if None in greedy else [g for g in greedy if g is not None],
        greedy_texts=[r.greedy[0] for r in records],
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
        means=_joined([p.means for p in pools]),
        cumulative=_joined([p.cumulative for p in pools]),
        entropies=_joined([p.entropies for p in pools]),
        num_tokens=_joined([p.num_tokens for p in pools]),
        texts=[t for pool in pools for t in pool.texts],
        answers=[a for pool in pools for a in pool.answers],
        greedy=np.concatenate([p.greedy for p in pools]),
        beam=None,
        gen_seconds=sum(p.gen_seconds for p in pools),
        greedy_candidates=_chained([p.greedy_candidates for p in pools]),
        greedy_texts=_chained([p.greedy_texts for p in pools]),
    )


def _chained(lists: list[list[T] | None]) -> list[T] | None:
    if any(items is None for items in lists):
        return None
    return [item for items in lists if items is not None for item in items]
