"""Synthetic datasets with a planted signal, for tests, demos and benchmarks.

A secret direction ``u`` is added (scaled by ``signal``) to the features of the
"good" candidates; everything else is Gaussian noise. A ranker that learns ``u``
ranks good candidates first, so accuracy on fresh data from the same direction
is a direct, model-free check that training works. ``planted_dataset`` gives
one vector per candidate (list and point rankers), ``planted_token_dataset``
ragged per-token features (SWIFT). The arrays are numpy.
"""

from __future__ import annotations

import numpy as np

from edge.app.dataset import GroupDataset
from edge.swift.train import TokenDataset

__all__ = ["planted_dataset", "planted_token_dataset"]


def planted_dataset(
    num_groups: int,
    k: int,
    feature_size: int,
    *,
    signal: float = 3.0,
    offset: float = 2.0,
    positives: int = 1,
    seed: int = 0,
    direction_seed: int = 1234,
    dtype: type[np.floating] = np.float32,
) -> GroupDataset:
    """``num_groups`` groups of ``k`` candidates, ``positives`` of which carry the signal.

    Instructions and candidates are Gaussian noise around two different mean
    vectors (``offset`` scales them, per coordinate); good candidates also get
    ``signal`` times the secret unit direction.

    Datasets sharing ``direction_seed`` share the planted direction, so one can be
    used for training and another (different ``seed``) as held-out data.
    """
    if not 1 <= positives < k:
        raise ValueError(f"need 1 <= positives < k, got positives={positives}, k={k}")
    secret = np.random.default_rng(direction_seed)
    direction = secret.standard_normal(feature_size)
    direction /= np.linalg.norm(direction)
    # Real hidden states are anisotropic, and the last prompt token sits in another
    # region than the end of a response: each kind gets its own large mean vector.
    inst_mean = (offset * secret.standard_normal(feature_size)).astype(np.float32)
    cand_mean = (offset * secret.standard_normal(feature_size)).astype(np.float32)
    rng = np.random.default_rng(seed)
    instructions = rng.standard_normal((num_groups, feature_size), dtype=np.float32)
    candidates = rng.standard_normal((num_groups, k, feature_size), dtype=np.float32)
    labels = np.zeros((num_groups, k), dtype=np.float32)
    for g in range(num_groups):
        good = rng.choice(k, size=positives, replace=False)
        labels[g, good] = 1.0
    candidates += (signal * labels)[..., None] * direction.astype(np.float32)
    instructions += inst_mean
    candidates += cand_mean
    return GroupDataset.from_arrays(instructions.astype(dtype), candidates.astype(dtype), labels)


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
