"""Per-token datasets with a planted signal, for tests and benchmarks of SWIFT (numpy).

The per-token twin of ``edge.training.planted_dataset``: a secret direction
marks the correct candidates, on one token anywhere in the response, so a
last-token head cannot see it and a gated per-token head can.
"""

from __future__ import annotations

import numpy as np

from edge.swift.train import TokenDataset

__all__ = ["planted_token_dataset"]


def planted_token_dataset(
    num_groups: int,
    k: int,
    feature_size: int,
    *,
    signal: float = 2.0,
    positive_rate: float = 0.3,
    max_tokens: int = 19,
    seed: int = 0,
    direction_seed: int = 99,
) -> TokenDataset:
    """``num_groups`` groups of ``k`` ragged candidates whose signal sits on ONE token.

    Each candidate has 2 to ``max_tokens`` Gaussian token vectors (float16, as
    central sends them); one random token gets ``+signal`` times the secret
    direction if the candidate is correct, ``-signal`` times if not. A
    last-token head cannot see it (the token is anywhere in the response); a
    gated per-token head can, by opening its gate on the tokens that carry it.
    One candidate per group is correct, each other one with ``positive_rate``.
    Datasets sharing ``direction_seed`` share the direction.
    """
    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(direction_seed).standard_normal(feature_size)
    tokens, labels = [], []
    for _ in range(num_groups):
        cands, labs = [], []
        for j in range(k):
            length = int(rng.integers(2, max_tokens + 1))
            x = rng.standard_normal((length, feature_size)).astype(np.float32)
            good = float(j == 0 or rng.random() < positive_rate)
            x[int(rng.integers(0, length))] += np.float32(signal * (2 * good - 1)) * direction
            cands.append(x.astype(np.float16))
            labs.append(good)
        order = rng.permutation(k)
        tokens.append([cands[i] for i in order])
        labels.append([labs[i] for i in order])
    return TokenDataset.from_lists(tokens, labels)
