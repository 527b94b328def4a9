"""Decoding wire tensors into numpy: the edge side of the feature encoding."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge._errors import ServerError
from language_ranker.v1 import ranker_pb2 as pb

__all__ = ["ENCODINGS", "decode_tensor"]

_DTYPES: dict[int, np.dtype[Any]] = {
    pb.DTYPE_FLOAT16: np.dtype("<f2"),
    pb.DTYPE_FLOAT32: np.dtype("<f4"),
    pb.DTYPE_INT8: np.dtype("i1"),
}

ENCODINGS = {"fp16": pb.ENCODING_FP16, "fp32": pb.ENCODING_FP32, "int8": pb.ENCODING_INT8}


def decode_tensor(tensor: pb.Tensor) -> np.ndarray:
    """The tensor's values as float32, checked against its declared shape."""
    dtype = _DTYPES.get(tensor.dtype)
    if dtype is None:
        raise ServerError(f"feature has unknown dtype {tensor.dtype}")
    shape = tuple(int(n) for n in tensor.shape)
    count = int(np.prod(shape)) if shape else 1
    if len(tensor.data) != count * dtype.itemsize:
        raise ServerError(
            f"feature declares shape {shape} of {dtype} ({count * dtype.itemsize} bytes) "
            f"but carries {len(tensor.data)} bytes"
        )
    values = np.frombuffer(tensor.data, dtype=dtype).astype(np.float32)
    if tensor.dtype == pb.DTYPE_INT8:
        rows = values.reshape(-1, shape[-1] if shape else 1)
        scales = np.asarray(tensor.scales, dtype=np.float32)
        if scales.shape[0] != rows.shape[0]:
            raise ServerError(f"int8 feature has {scales.shape[0]} scales for {rows.shape[0]} rows")
        values = rows * scales[:, None]
    return values.reshape(shape)
