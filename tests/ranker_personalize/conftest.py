"""A synthetic pool (no LLM) whose vectors carry the candidates' text identity."""

from __future__ import annotations

import numpy as np
import pytest

from ranker_personalize.pool import Pool, PoolSettings

TEXTS = [
    "Drink water.",
    "You really should drink lots of water because it's great and you'll feel awesome!",
    "Try this:\n1. Sleep early\n2. Avoid screens\n- Read a book",
    "It is therefore recommended to ensure sufficient rest; however, individuals vary.",
    "Walk 30 minutes, for example after lunch, about 5 days a week.",
]


def fake_pool(prompts: int = 40, k: int = 4, d: int = 16, seed: int = 0) -> Pool:
    """Candidates are drawn from TEXTS; each text has its own feature direction plus noise."""
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((len(TEXTS), d)).astype(np.float32)
    which = rng.integers(0, len(TEXTS), size=(prompts, k))
    cands = directions[which] + 0.3 * rng.standard_normal((prompts, k, d)).astype(np.float32)
    means = directions[which] + 0.5 * rng.standard_normal((prompts, k, d)).astype(np.float32)
    settings = PoolSettings("fake", k, 8, 1.0, 1, seed)
    return Pool(
        settings,
        [f"p{i:03d}" for i in range(prompts)],
        [f"prompt {i}" for i in range(prompts)],
        np.arange(prompts) % 10,
        rng.standard_normal((prompts, d)).astype(np.float32),
        cands.astype(np.float32),
        [[TEXTS[j] for j in row] for row in which],
        np.ones((prompts, k), dtype=bool),
        means.astype(np.float32),
        3 + which.astype(np.int64) * 4,
        -1.5 * (3 + which.astype(np.float64) * 4),
        1.0 + 0.1 * which.astype(np.float64),
    )


@pytest.fixture()
def pool() -> Pool:
    return fake_pool()
