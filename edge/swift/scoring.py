"""Ranking with an exported SWIFT head, using onnxruntime only (no torch).

A SWIFT graph takes ``tokens (B, K, T, d)`` and ``mask (B, K, T)`` instead of
the Language Ranker's ``(instruction, candidates)``, so it gets its own
session class; loading (``edge.runtime.session.OnnxSession``) and the
``Ranking`` result are the ones ``edge.runtime.scoring`` uses. The session also
says what to ask central for (``token_request``): the layers or top-k log-probs
the head was trained on, read from the metadata the exporter wrote.

Importing this module must never import torch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge._errors import CorruptModelError, FeatureError
from edge.runtime.features import check_finite
from edge.runtime.onnx_meta import (
    INPUT_CANDIDATES,
    INPUT_MASK,
    INPUT_TOKENS,
    META_CONFIG,
    META_FEATURE_SIZE,
    META_KIND,
    OUTPUT_SCORES,
)
from edge.runtime.scoring import Ranking
from edge.runtime.session import OnnxSession
from edge.swift.tokens import pad_tokens

__all__ = ["TokenRankingSession"]


class TokenRankingSession(OnnxSession):
    """One loaded SWIFT graph: validates per-token features and scores candidates."""

    needs_token_features = True  # the client asks central for per-token features

    def __init__(self, data: bytes, source: str = "<bytes>", *, threads: int = 1) -> None:
        super().__init__(data, source, threads=threads)
        self.feature_size = self._check_io(self._where)
        self.config: dict[str, Any] = json.loads(self.metadata.get(META_CONFIG, "{}"))

    def _check_io(self, where: str | None) -> int:
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        if {INPUT_TOKENS, INPUT_MASK} - inputs.keys() or OUTPUT_SCORES not in outputs:
            kind = self.metadata.get(META_KIND, "unknown")
            hint = (
                "; score it with edge.runtime.RankingSession" if INPUT_CANDIDATES in inputs else ""
            )
            raise CorruptModelError(
                f"not a token-level ranker graph: a {kind!r} ranker with inputs "
                f"{sorted(inputs)}, outputs {sorted(outputs)}; expected {INPUT_TOKENS!r}, "
                f"{INPUT_MASK!r} -> {OUTPUT_SCORES!r}{hint}",
                where,
            )
        meta = self.metadata.get(META_FEATURE_SIZE, "")
        graph_d = inputs[INPUT_TOKENS].shape[-1]
        if meta.isdigit():
            return int(meta)
        if isinstance(graph_d, int):
            return graph_d
        raise CorruptModelError(
            "token feature size is neither in the metadata nor the graph", where
        )

    @property
    def token_request(self) -> dict[str, Any]:
        """What to ask central for: ``{"source", "layers", "top_logprobs"}`` as trained."""
        return {
            "source": self.config.get("source", "hidden"),
            "layers": [int(x) for x in self.config.get("layers", [])],
            "top_logprobs": int(self.config.get("top_logprobs", 0)),
        }

    def score_batch(self, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Score B padded groups: ``(B, K, T, d)`` and ``(B, K, T)`` -> ``(B, K)`` float32."""
        tok = np.asarray(tokens)
        msk = np.asarray(mask)
        if tok.dtype.kind != "f" or msk.dtype.kind not in "fbiu":
            raise FeatureError(f"token features have dtype {tok.dtype}, expected float")
        tok = np.ascontiguousarray(tok, dtype=np.float32)
        msk = np.ascontiguousarray(msk, dtype=np.float32)
        if tok.ndim != 4 or msk.shape != tok.shape[:3]:
            raise FeatureError(
                f"shapes {tok.shape} and {msk.shape} do not match (B, K, T, d) and (B, K, T)"
            )
        if tok.shape[1] == 0 or tok.shape[2] == 0:
            raise FeatureError("need at least one candidate and one (possibly padded) token")
        if tok.shape[-1] != self.feature_size:
            raise FeatureError(
                f"token feature has {tok.shape[-1]} values, ranker expects {self.feature_size}"
            )
        check_finite(tok, "candidate token features")
        return self._run_tokens(tok, msk)

    def score(self, candidates: Sequence[np.ndarray]) -> np.ndarray:
        """Score one group: K ragged ``(T_k, d)`` arrays -> ``(K,)`` float32."""
        tokens, mask = pad_tokens(candidates, self.feature_size)
        return self._run_tokens(tokens[None], mask[None])[0]

    def rank(self, candidates: Sequence[np.ndarray]) -> Ranking:
        """Order one group's candidates best first (stable for ties)."""
        scores = self.score(candidates)
        return Ranking(order=np.argsort(-scores, kind="stable"), scores=scores)

    def _run_tokens(self, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._run({INPUT_TOKENS: tokens, INPUT_MASK: mask})
