"""Ranking with an exported ranker, using onnxruntime only (no torch).

This is the part an app ships: numpy + onnxruntime. Sessions run on one intra-op
thread because one ranking is a handful of small matmuls where thread hand-off
costs more than it saves, and the app's UI thread should not compete with a
pool. ``Ranker`` adds a thread-safe hot swap: a new version is loaded and
validated *before* it replaces the current one, readers never take a lock (they
read one reference), and the previous versions are kept for rollback.

Importing this module must never import torch (checked by the test suite).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge._errors import CorruptModelError, FeatureError, RankerError
from edge.runtime.features import as_candidates, as_vector, check_finite
from edge.runtime.onnx_meta import (
    INPUT_CANDIDATES,
    INPUT_INSTRUCTION,
    INPUT_TOKENS,
    META_FEATURE_SIZE,
    META_KIND,
    OUTPUT_SCORES,
)

__all__ = ["ModelSource", "Ranker", "Ranking", "RankingSession"]

ModelSource = bytes | str | Path


@dataclass(frozen=True)
class Ranking:
    """The candidates of one group ordered best first."""

    order: np.ndarray  # (K,) candidate indices, best first
    scores: np.ndarray  # (K,) scores in the original candidate order

    @property
    def best(self) -> int:
        """Index of the highest-scoring candidate."""
        return int(self.order[0])


def _read(model: ModelSource) -> tuple[bytes, str]:
    if isinstance(model, bytes | bytearray | memoryview):
        return bytes(model), "<bytes>"
    path = Path(model)
    try:
        return path.read_bytes(), str(path)
    except IsADirectoryError as exc:
        raise CorruptModelError("is a directory, not an ONNX file", path) from exc


def _options(threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: do not spam the app's stderr
    return opts


class RankingSession:
    """One loaded ONNX ranker: validates features and scores candidates."""

    def __init__(self, data: bytes, source: str = "<bytes>", *, threads: int = 1) -> None:
        if not data:
            raise CorruptModelError("file is empty", source if source != "<bytes>" else None)
        try:
            self._session = ort.InferenceSession(
                data, sess_options=_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            where = source if source != "<bytes>" else None
            raise CorruptModelError(f"not a loadable ONNX model ({exc})", where) from exc
        self.source = source
        self.metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)
        self.feature_size = self._check_io()
        self.kind: str | None = self.metadata.get(META_KIND)

    @classmethod
    def load(cls, model: ModelSource, *, threads: int = 1) -> RankingSession:
        """Load from a file path or from the ONNX bytes themselves."""
        data, source = _read(model)
        return cls(data, source, threads=threads)

    def _check_io(self) -> int | None:
        """Check the graph has the ranker I/O contract; return d when it is known."""
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        where = None if self.source == "<bytes>" else self.source
        missing = {INPUT_INSTRUCTION, INPUT_CANDIDATES} - inputs.keys()
        if missing or OUTPUT_SCORES not in outputs:
            kind = self.metadata.get(META_KIND, "unknown")
            per_token = INPUT_TOKENS in inputs
            hint = "; score it with edge.swift.TokenRankingSession" if per_token else ""
            raise CorruptModelError(
                f"not a ranker graph: a {kind!r} ranker with inputs {sorted(inputs)}, outputs "
                f"{sorted(outputs)}; expected inputs {INPUT_INSTRUCTION!r}, {INPUT_CANDIDATES!r} "
                f"and output {OUTPUT_SCORES!r}{hint}",
                where,
            )
        graph_d = inputs[INPUT_CANDIDATES].shape[-1]
        graph_d = graph_d if isinstance(graph_d, int) else None
        meta = self.metadata.get(META_FEATURE_SIZE)
        meta_d = int(meta) if meta is not None and meta.isdigit() else None
        if graph_d is not None and meta_d is not None and graph_d != meta_d:
            raise CorruptModelError(
                f"metadata says feature size {meta_d} but the graph takes {graph_d}", where
            )
        return meta_d if meta_d is not None else graph_d

    def score_batch(self, instructions: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Score B groups at once: (B, d) and (B, K, d) -> (B, K) float32."""
        inst = np.asarray(instructions)
        cand = np.asarray(candidates)
        if inst.dtype.kind != "f" or cand.dtype.kind != "f":
            bad = inst.dtype if inst.dtype.kind != "f" else cand.dtype
            raise FeatureError(f"features have dtype {bad}, expected float32 or float16")
        inst = np.ascontiguousarray(inst, dtype=np.float32)
        cand = np.ascontiguousarray(cand, dtype=np.float32)
        if inst.ndim != 2 or cand.ndim != 3 or cand.shape[0] != inst.shape[0]:
            raise FeatureError(
                f"batch shapes {inst.shape} and {cand.shape} do not match (B, d) and (B, K, d)"
            )
        if cand.shape[1] == 0:
            raise FeatureError("candidate features are empty: at least one candidate is needed")
        for what, arr in (("instruction feature", inst), ("candidate features", cand)):
            if self.feature_size is not None and arr.shape[-1] != self.feature_size:
                raise FeatureError(
                    f"{what}: feature has {arr.shape[-1]} values, ranker expects "
                    f"{self.feature_size}"
                )
            check_finite(arr, what)
        return self._run(inst, cand)

    def score(self, instruction: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Score one group: instruction (d,), candidates (K, d) -> (K,) float32."""
        inst = as_vector(instruction, self.feature_size)
        cand = as_candidates(candidates, self.feature_size)
        if self.feature_size is None and cand.shape[1] != inst.shape[0]:
            raise FeatureError(
                f"candidate feature has {cand.shape[1]} values, instruction has {inst.shape[0]}"
            )
        return self._run(inst[None], cand[None])[0]

    def rank(self, instruction: np.ndarray, candidates: np.ndarray) -> Ranking:
        """Order one group's candidates best first (stable for ties)."""
        scores = self.score(instruction, candidates)
        return Ranking(order=np.argsort(-scores, kind="stable"), scores=scores)

    def _run(self, inst: np.ndarray, cand: np.ndarray) -> np.ndarray:
        try:
            (out,) = self._session.run(
                [OUTPUT_SCORES], {INPUT_INSTRUCTION: inst, INPUT_CANDIDATES: cand}
            )
        except Exception as exc:
            raise RankerError(f"onnxruntime failed to score ({self.source}): {exc}") from exc
        return np.asarray(out, dtype=np.float32)


@dataclass(frozen=True)
class _Active:
    session: RankingSession
    version: object  # whatever the app uses to name versions (int, str, None)


class Ranker:
    """A ranker that can be swapped to a new version while others are scoring.

    ``score`` and ``rank`` read the active (session, version) pair once, so a call
    in flight finishes on the version it started with. ``swap`` loads the new
    model first: a corrupt file raises and leaves the active version untouched.
    """

    def __init__(
        self,
        model: ModelSource | RankingSession,
        *,
        version: object = None,
        threads: int = 1,
        keep: int = 5,
    ) -> None:
        self._threads = threads
        self._keep = max(1, keep)
        self._lock = threading.Lock()
        self._history: list[_Active] = []
        self._active = _Active(self._session(model), version)

    def _session(self, model: ModelSource | RankingSession) -> RankingSession:
        if isinstance(model, RankingSession):
            return model
        return RankingSession.load(model, threads=self._threads)

    @property
    def version(self) -> object:
        return self._active.version

    @property
    def session(self) -> RankingSession:
        return self._active.session

    @property
    def feature_size(self) -> int | None:
        return self._active.session.feature_size

    @property
    def metadata(self) -> Mapping[str, str]:
        return self._active.session.metadata

    def swap(self, model: ModelSource | RankingSession, version: object = None) -> object:
        """Make ``model`` active; returns the version it replaced."""
        new = _Active(self._session(model), version)
        with self._lock:
            old = self._active
            self._history = [*self._history, old][-self._keep :]
            self._active = new
        return old.version

    def rollback(self) -> object:
        """Return to the previously active version; returns the version now active."""
        with self._lock:
            if not self._history:
                raise RankerError("nothing to roll back to: no earlier version was active")
            self._active = self._history.pop()
            return self._active.version

    def score(self, instruction: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return self._active.session.score(instruction, candidates)

    def score_batch(self, instructions: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return self._active.session.score_batch(instructions, candidates)

    def rank(self, instruction: np.ndarray, candidates: np.ndarray) -> Ranking:
        return self._active.session.rank(instruction, candidates)
