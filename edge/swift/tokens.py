"""Padding per-token features into the dense batch a token-level head takes (numpy only).

Each candidate has its own number of response tokens T_k, so a group of K
candidates is a ragged list of ``(T_k, d)`` arrays. Heads and the ONNX graph
take a dense ``(K, T, d)`` block plus a ``(K, T)`` mask, with T the longest
candidate; the mask is what keeps the padding out of every score. This module
is shared by training (torch) and the runtime (onnxruntime only), so it must
never import torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge._errors import FeatureError
from edge.runtime.features import check_finite

__all__ = ["pad_groups", "pad_tokens"]


def _rows(array: object, size: int | None, what: str) -> np.ndarray:
    out = np.asarray(array)
    if out.dtype.kind != "f":
        raise FeatureError(f"{what} has dtype {out.dtype}, expected float32 or float16")
    if out.ndim != 2:
        raise FeatureError(f"{what} has shape {out.shape}, expected (tokens, d)")
    if size is not None and out.shape[1] != size:
        raise FeatureError(f"{what}: token feature has {out.shape[1]} values, expected {size}")
    return out


def pad_tokens(
    candidates: Sequence[np.ndarray], size: int | None = None, *, min_length: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """K ragged ``(T_k, d)`` arrays -> ``tokens (K, T, d)`` float32 and ``mask (K, T)`` float32.

    ``T = max(T_k, min_length)``: at least one (all-padding) position, so a
    group whose candidates are all empty still has a valid shape.
    """
    if not len(candidates):
        raise FeatureError("candidate token features are empty: at least one candidate is needed")
    rows = [_rows(c, size, f"candidate {i} token features") for i, c in enumerate(candidates)]
    d = rows[0].shape[1]
    if any(r.shape[1] != d for r in rows):
        raise FeatureError(
            f"candidates mix token feature sizes {sorted({r.shape[1] for r in rows})}"
        )
    length = max([min_length, *(r.shape[0] for r in rows)])
    tokens = np.zeros((len(rows), length, d), dtype=np.float32)
    mask = np.zeros((len(rows), length), dtype=np.float32)
    for k, r in enumerate(rows):
        tokens[k, : r.shape[0]] = r
        mask[k, : r.shape[0]] = 1.0
    check_finite(tokens, "candidate token features")
    return tokens, mask


def pad_groups(
    groups: Sequence[Sequence[np.ndarray]], size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """B groups of K ragged candidates -> ``(B, K, T, d)`` and ``(B, K, T)``; K must be equal."""
    if not len(groups):
        raise FeatureError("no groups to pad")
    ks = {len(g) for g in groups}
    if len(ks) != 1:
        raise FeatureError(f"groups in one batch must have equal K, got {sorted(ks)}")
    length = max([1, *(np.shape(c)[0] for g in groups for c in g)])
    padded = [pad_tokens(g, size, min_length=length) for g in groups]
    return np.stack([t for t, _ in padded]), np.stack([m for _, m in padded])
