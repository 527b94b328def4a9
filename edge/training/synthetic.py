"""Synthetic datasets with a planted signal, for tests, demos and benchmarks.

A secret direction ``u`` is added (scaled by ``signal``) to the features of the
"good" candidates; everything else is Gaussian noise. A ranker that learns ``u``
ranks good candidates first, so accuracy on fresh data from the same direction
is a direct, model-free check that training works. ``planted_dataset`` gives
one vector per candidate (list and point rankers), optionally with the other
parts of representation v2 (a mean vector, a signals block), any of which may
carry the signal (SWIFT's per-token twin is ``edge.swift.planted_token_dataset``).
The arrays are numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge.app.dataset import GroupDataset
from edge.runtime.parts import Part

__all__ = ["planted_dataset"]


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
