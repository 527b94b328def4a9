"""Generations with a known favourite, for the personal learner's tests (and their subprocesses).

Built here rather than asked from central: the learner only sees what the store
keeps, and the tests need to know which answer a user prefers. The simulated
taste is for list-formatted answers, which the signals see and the vectors do not.
"""

from __future__ import annotations

import numpy as np

from edge.runtime.types import Candidate, Generation

ANSWERS = (
    "Sure. The answer is short.",
    "- first point\n- second point\n- third point",
    "Well, it depends on many things, and we'd need to know more about it first.",
    "Yes!",
    "1. one\n2. two",
)


def generation(seed: int, d: int = 32, k: int = 5) -> tuple[Generation, list[int]]:
    """K of the answers in a shuffled order, random vectors; the list answers' indices."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ANSWERS))[:k]
    cands = tuple(
        Candidate(
            i,
            ANSWERS[j],
            tuple(range(3 + 2 * j)),
            "eos",
            -1.0 - j,
            rng.standard_normal(d).astype(np.float32),
            mean_feature=rng.standard_normal(d).astype(np.float32),
        )
        for i, j in enumerate(order)
    )
    liked = [i for i, c in enumerate(cands) if c.text.startswith(("-", "1."))]
    return Generation(f"prompt {seed}", rng.standard_normal(d).astype(np.float32), cands), liked
