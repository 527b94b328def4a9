"""Ranker weights as plain numpy arrays, serialised without pickle.

The registry keeps, next to each exported ONNX file, the trainable weights of the
ranker so that the next incremental update can continue from them (ONNX graphs
are for inference; recovering weights from them is fragile). The format is an
``.npz`` archive loaded with ``allow_pickle=False``: a checkpoint from disk can
never execute code. This module is numpy-only so the registry stays torch-free.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge._errors import CorruptModelError

__all__ = ["Checkpoint"]

_CONFIG_KEY = "__config__"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Checkpoint:
    """Everything needed to rebuild a torch ranker: its kind, config and weights."""

    kind: str  # ranker kind: "list" or "point"
    config: dict[str, Any]  # the ranker config dataclass as a JSON-able dict
    weights: dict[str, np.ndarray] = field(repr=False)  # state_dict entries as float32 arrays

    @property
    def feature_size(self) -> int:
        return int(self.config["feature_size"])

    def to_bytes(self) -> bytes:
        """Serialise as an uncompressed npz; the header carries kind, config, format."""
        header = json.dumps(
            {"format": FORMAT_VERSION, "kind": self.kind, "config": self.config}, sort_keys=True
        ).encode()
        buf = io.BytesIO()
        arrays = {_CONFIG_KEY: np.frombuffer(header, dtype=np.uint8), **self.weights}
        # numpy's stubs type **kwds as if a weight could be named allow_pickle.
        save: Callable[..., None] = np.savez
        save(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "checkpoint") -> Checkpoint:
        """Parse bytes from ``to_bytes``; damaged input raises CorruptModelError."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise CorruptModelError(f"{source} is not a readable weights archive: {exc}") from exc
        if _CONFIG_KEY not in arrays:
            raise CorruptModelError(f"{source} has no {_CONFIG_KEY} entry")
        try:
            header = json.loads(arrays.pop(_CONFIG_KEY).tobytes().decode())
            kind, config = str(header["kind"]), dict(header["config"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptModelError(f"{source} has an unreadable header: {exc}") from exc
        return cls(kind=kind, config=config, weights=arrays)
