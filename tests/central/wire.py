"""Decoding wire tensors in tests, written independently of the edge SDK so
that the contract is checked from both sides."""

from __future__ import annotations

import numpy as np

from language_ranker.v1 import ranker_pb2 as pb

_DTYPES = {pb.DTYPE_FLOAT16: "<f2", pb.DTYPE_FLOAT32: "<f4", pb.DTYPE_INT8: "i1"}


def decode(tensor: pb.Tensor) -> np.ndarray:
    values = np.frombuffer(tensor.data, dtype=_DTYPES[tensor.dtype]).astype(np.float32)
    shape = tuple(tensor.shape)
    if tensor.dtype == pb.DTYPE_INT8:
        values = values.reshape(-1, shape[-1]) * np.asarray(tensor.scales, np.float32)[:, None]
    return values.reshape(shape)
