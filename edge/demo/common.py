"""What both parts of the demo share: sampling, accuracies with intervals, timings."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.demo.config import DemoConfig
from edge.eval.stats import paired_difference, wilson
from edge.runtime.client import CentralClient
from edge.runtime.types import Generation

__all__ = ["Accuracy", "PhaseTimer", "first_sampled", "paired_gain", "sample", "sample_many"]


@dataclass
class Accuracy:
    """Share of prompts whose chosen answer is right, with a 95% Wilson interval.

    `correct` may be fractional: a random pick's *expected* hits, computed exactly.
    """

    correct: float
    total: int
    low: float = field(init=False)
    high: float = field(init=False)

    def __post_init__(self) -> None:
        self.low, self.high = wilson(self.correct, self.total)

    @classmethod
    def of(cls, hits: Sequence[bool]) -> Accuracy:
        """The accuracy of per-prompt hits."""
        return cls(sum(bool(h) for h in hits), len(hits))

    @property
    def rate(self) -> float:
        return self.correct / self.total if self.total else math.nan

    def as_json(self) -> dict[str, Any]:
        return {
            "accuracy": self.rate,
            "correct": self.correct,
            "total": self.total,
            "ci95": [self.low, self.high],
        }


def paired_gain(
    chosen: Sequence[bool], baseline: Sequence[bool], *, seed: int = 0, resamples: int = 4000
) -> dict[str, Any]:
    """Mean accuracy difference on the same prompts, with a 95% paired bootstrap interval:
    ``{"difference": float, "ci95": [low, high]}``."""
    difference, low, high = paired_difference(
        np.asarray(chosen), np.asarray(baseline), resamples, seed
    )
    return {"difference": difference, "ci95": [low, high]}


class PhaseTimer:
    """Wall-clock seconds per named phase, in the order the phases ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 2)


def first_sampled(greedy_first: bool) -> int:
    """The index of the first *sampled* candidate (after the greedy one, if asked
    for): what an app without a ranker shows."""
    return 1 if greedy_first else 0


def sample(
    central: CentralClient,
    prompt: str,
    config: DemoConfig,
    *,
    max_new_tokens: int,
    seed: int,
) -> Generation:
    """K candidates with everything a personal ranker reads: the last-token and the
    mean vectors, and the model's mean entropy (an on-device signal), besides the
    log-probabilities every candidate carries. With ``config.greedy_first`` candidate 0
    is the greedy answer."""
    return central.generate(
        prompt,
        config.k,
        temperature=config.temperature,
        greedy_first=config.greedy_first,
        max_new_tokens=max_new_tokens,
        seed=seed,
        vectors=("last", "mean"),
        mean_entropy=True,
    )


# Generations in flight at once: central's engine batches them into the same decode
# steps, so the demo's sampling takes a fraction of the time one at a time would. A
# seeded generation is the same whatever shares the batch, so results do not change.
CONCURRENT_GENERATIONS = 8


def sample_many(
    central: CentralClient,
    prompts: Sequence[str],
    seeds: Sequence[int],
    config: DemoConfig,
    *,
    max_new_tokens: int,
) -> list[Generation]:
    """`sample` for each (prompt, seed), several at once, in order."""
    with ThreadPoolExecutor(CONCURRENT_GENERATIONS) as pool:
        return list(
            pool.map(
                lambda prompt, seed: sample(
                    central, prompt, config, max_new_tokens=max_new_tokens, seed=seed
                ),
                prompts,
                seeds,
            )
        )
