"""Synthetic datasets with a planted signal, for tests, demos and benchmarks.

A secret direction ``u`` is added (scaled by ``signal``) to the features of the
"good" candidates; everything else is Gaussian noise. A ranker that learns ``u``
ranks good candidates first, so accuracy on fresh data from the same direction
is a direct, model-free check that training works. numpy-only.
"""

from __future__ import annotations

import numpy as np

from edge.app.dataset import GroupDataset

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
