"""One loaded ONNX ranker graph: the base of the vector and the token sessions (no torch).

A ranker graph of either input family is loaded the same way: from a path or
the bytes themselves, refused with CorruptModelError naming the file when it is
empty or onnxruntime cannot load it, run on one intra-op thread, and asked for
its ``scores`` output. ``edge.runtime.scoring.RankingSession`` (vectors per
candidate) and ``edge.swift.TokenRankingSession`` (per-token features) derive
from ``OnnxSession`` and add only what their inputs need.

Sessions run on one intra-op thread because one ranking is a handful of small
matmuls where thread hand-off costs more than it saves, and the app's UI thread
should not compete with a pool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy as np
import onnxruntime as ort

from edge._errors import CorruptModelError, RankerError
from edge.runtime.onnx_meta import OUTPUT_SCORES

__all__ = ["ModelSource", "OnnxSession", "read_model", "session_options"]

ModelSource = bytes | str | Path
_BYTES = "<bytes>"  # the source of a model given as bytes


def read_model(model: ModelSource) -> tuple[bytes, str]:
    """The ONNX bytes and where they came from (a path, or ``<bytes>``)."""
    if isinstance(model, bytes | bytearray | memoryview):
        return bytes(model), _BYTES
    path = Path(model)
    try:
        return path.read_bytes(), str(path)
    except IsADirectoryError as exc:
        raise CorruptModelError("is a directory, not an ONNX file", path) from exc


def session_options(threads: int) -> ort.SessionOptions:
    """onnxruntime options for a ranker: ``threads`` intra-op threads, sequential,
    every graph optimisation, errors only in the log."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: do not spam the app's stderr
    return opts


class OnnxSession:
    """An onnxruntime session over a ranker graph, with the graph's metadata."""

    def __init__(self, data: bytes, source: str = _BYTES, *, threads: int = 1) -> None:
        where = None if source == _BYTES else source
        if not data:
            raise CorruptModelError("file is empty", where)
        try:
            self._session = ort.InferenceSession(
                data, sess_options=session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise CorruptModelError(f"not a loadable ONNX model ({exc})", where) from exc
        self.source = source  # the file it was loaded from, or "<bytes>"
        # the graph's custom metadata (language_ranker.* entries)
        self.metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)

    @classmethod
    def load(cls, model: ModelSource, *, threads: int = 1) -> Self:
        """Load from a file path or from the ONNX bytes themselves."""
        data, source = read_model(model)
        return cls(data, source, threads=threads)

    @property
    def _where(self) -> str | None:
        """The file, for error messages; None for a model given as bytes."""
        return None if self.source == _BYTES else self.source

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The graph's ``scores`` for ``feeds``, float32; a runtime failure as RankerError."""
        try:
            (out,) = self._session.run([OUTPUT_SCORES], feeds)
        except Exception as exc:
            raise RankerError(f"onnxruntime failed to score ({self.source}): {exc}") from exc
        return np.asarray(out, dtype=np.float32)
