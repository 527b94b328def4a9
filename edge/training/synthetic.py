"""Synthetic datasets with a planted signal, for tests, demos and benchmarks.

A secret direction ``u`` is added (scaled by ``signal``) to the features of the
"good" candidates; everything else is Gaussian noise. A ranker that learns ``u``
ranks good candidates first, so accuracy on fresh data from the same direction
is a direct, model-free check that training works. ``planted_dataset`` gives
one vector per candidate (list and point rankers), optionally with the other
parts of representation v2 (a mean vector, a signals block), any of which may
carry the signal; ``planted_token_dataset`` ragged per-token features (SWIFT).
The arrays are numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge.app.dataset import GroupDataset, Part
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
    mean: bool = False,
    signals: int = 0,
    planted: Sequence[Part] = ("last", "mean", "signals"),
) -> GroupDataset:
    """``num_groups`` groups of ``k`` candidates, ``positives`` of which carry the signal.

    Instructions and candidates are Gaussian noise around two different mean
    vectors (``offset`` scales them, per coordinate); good candidates also get
    ``signal`` times the secret unit direction.

    ``mean=True`` adds mean vectors (``mean_candidates``), noise around a third
    mean vector; ``signals=S`` adds S signals per candidate, Gaussian noise with
    column scales from 0.01 to 100 (what the ranker's standardisation is for).
    Each part listed in ``planted`` carries the signal along its own secret
    direction, the others are pure noise: ``planted=("mean",)`` makes a ranker
    that reads only last-token vectors no better than chance.

    Datasets sharing ``direction_seed`` share the planted directions, so one can
    be used for training and another (different ``seed``) as held-out data.
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
    if "last" in planted:
        candidates += (signal * labels)[..., None] * direction.astype(np.float32)
    instructions += inst_mean
    candidates += cand_mean
    mean_candidates = signal_block = None
    if mean:
        mean_dir, mean_mean = _direction(secret, feature_size), secret.standard_normal(feature_size)
        mean_candidates = rng.standard_normal((num_groups, k, feature_size), dtype=np.float32)
        if "mean" in planted:
            mean_candidates += (signal * labels)[..., None] * mean_dir
        mean_candidates = (mean_candidates + offset * mean_mean).astype(dtype)
    if signals:
        signal_dir = _direction(secret, signals)
        scales = np.logspace(-2, 2, signals).astype(np.float32)
        signal_block = rng.standard_normal((num_groups, k, signals), dtype=np.float32)
        if "signals" in planted:
            signal_block += (signal * labels)[..., None] * signal_dir
        signal_block = (signal_block * scales + scales).astype(np.float32)
    return GroupDataset.from_arrays(
        instructions.astype(dtype),
        candidates.astype(dtype),
        labels,
        mean_candidates=mean_candidates,
        signals=signal_block,
    )


def _direction(rng: np.random.Generator, size: int) -> np.ndarray:
    """A secret unit direction of ``size`` values."""
    direction = rng.standard_normal(size).astype(np.float32)
    return direction / np.linalg.norm(direction)


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
