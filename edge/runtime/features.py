"""Validation of feature arrays, shared by the runtime, the store and the dataset.

Features arrive from the network, from apps and from disk; a silently wrong vector
(a different model's hidden size, an int array, a NaN from an overflow in fp16)
would produce plausible-looking but meaningless rankings. Every entry point runs
its arrays through these checks so the error surfaces where the bad value enters,
with a message naming the mismatch.
"""

from __future__ import annotations

import numpy as np

from edge._errors import FeatureError

__all__ = ["as_candidates", "as_vector", "check_finite"]

_ACCEPTED_KINDS = "f"  # numpy dtype kind: floating point only


def _as_float32(array: object, what: str) -> np.ndarray:
    """Return ``array`` as float32, refusing anything that is not a float array.

    float16 (the wire format) and float64 (numpy's default) are cast; integers,
    booleans, complex and object arrays are refused because they indicate the
    caller passed the wrong thing, not a feature.
    """
    if not isinstance(array, np.ndarray):
        try:
            array = np.asarray(array)
        except Exception as exc:  # ragged lists and the like
            raise FeatureError(f"{what} is not an array: {exc}") from exc
    if array.dtype.kind not in _ACCEPTED_KINDS:
        raise FeatureError(
            f"{what} has dtype {array.dtype}, expected a floating dtype (float32 or float16)"
        )
    if array.dtype != np.float32:
        array = array.astype(np.float32)
    return array


def check_finite(array: np.ndarray, what: str) -> None:
    """Raise FeatureError naming the first NaN/inf position in ``array``."""
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        value = array[tuple(bad)]
        raise FeatureError(f"{what} contains {value} at index {tuple(int(i) for i in bad)}")


def as_vector(array: object, size: int | None, what: str = "instruction feature") -> np.ndarray:
    """Validate one feature vector of ``size`` values; return it as contiguous float32."""
    out = _as_float32(array, what)
    if out.ndim != 1:
        raise FeatureError(f"{what} has shape {out.shape}, expected a vector of shape (d,)")
    if size is not None and out.shape[0] != size:
        raise FeatureError(f"{what} has {out.shape[0]} values, ranker expects {size}")
    check_finite(out, what)
    return np.ascontiguousarray(out)


def as_candidates(array: object, size: int | None, what: str = "candidate features") -> np.ndarray:
    """Validate a (K, d) candidate matrix with K >= 1; return it as contiguous float32."""
    out = _as_float32(array, what)
    if out.ndim != 2:
        raise FeatureError(f"{what} has shape {out.shape}, expected a matrix of shape (K, d)")
    if out.shape[0] == 0:
        raise FeatureError(f"{what} is empty: at least one candidate is needed")
    if size is not None and out.shape[1] != size:
        raise FeatureError(f"{what}: feature has {out.shape[1]} values, ranker expects {size}")
    check_finite(out, what)
    return np.ascontiguousarray(out)
