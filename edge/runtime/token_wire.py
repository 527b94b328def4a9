"""The edge side of per-token features: what to ask for, and reassembling the chunks.

Per-token features are hundreds of times larger than the last-token feature
(see benchmarks/swift_bandwidth.py), so the client asks for them only when
told to, or when the ranker it is fetching for says it needs them
(``needs_token_features``). Central streams them as ``TokenFeatures`` chunks
after the candidates; ``TokenAssembler`` checks offsets and hands back one
``(T, D)`` array per candidate once its last chunk arrived.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge._errors import ServerError
from edge.runtime.wire import ENCODINGS, decode_tensor
from language_ranker.v1 import ranker_pb2 as pb

__all__ = ["CandidateTokens", "TokenAssembler", "TokenFeatureRequest", "token_spec"]


@dataclass(frozen=True)
class TokenFeatureRequest:
    """Which per-token features to ask central for."""

    layers: tuple[int, ...] = ()  # hidden-state layers to concatenate; () = server default
    all_layers: bool = False  # every layer 0..N (large: N + 1 times the hidden size a token)
    top_logprobs: int = 0  # > 0: logits-only mode, 2 + top_logprobs values a token
    encoding: str = "fp16"  # "fp16", "fp32" or "int8"

    @classmethod
    def for_ranker(cls, ranker: object, encoding: str = "fp16") -> TokenFeatureRequest | None:
        """What ``ranker`` was trained on, or None when it reads last-token features only.

        Works with a torch ``SwiftRanker`` (its config) and with an onnxruntime
        ``TokenRankingSession`` (its ``token_request`` from the ONNX metadata).
        """
        if not getattr(ranker, "needs_token_features", False):
            return None
        wanted: dict[str, Any] = getattr(ranker, "token_request", None) or {}
        config = getattr(ranker, "config", None)
        if not wanted and config is not None:
            wanted = {"layers": config.layers, "top_logprobs": config.top_logprobs}
        return cls(
            layers=tuple(int(x) for x in wanted.get("layers", ())),
            top_logprobs=int(wanted.get("top_logprobs", 0)),
            encoding=encoding,
        )


def token_spec(request: TokenFeatureRequest | bool | None) -> pb.TokenFeatureSpec | None:
    """The wire spec for a request; None (nothing sent) when per-token features are off."""
    if request is None or request is False:
        return None
    if request is True:
        request = TokenFeatureRequest()
    if request.encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {sorted(ENCODINGS)}, got {request.encoding!r}")
    return pb.TokenFeatureSpec(
        enabled=True,
        layers=list(request.layers),
        all_layers=request.all_layers,
        top_logprobs=request.top_logprobs,
        encoding=ENCODINGS[request.encoding],
    )


@dataclass(frozen=True)
class CandidateTokens:
    """All per-token features of one candidate, streamed after the candidates."""

    index: int  # the candidate's index among the K
    features: np.ndarray = field(repr=False)  # (T, D) float32, one row per response token


class TokenAssembler:
    """Collects TokenFeatures chunks into one array per candidate, checking their order."""

    def __init__(self) -> None:
        self._parts: dict[int, list[np.ndarray]] = {}
        self._received: dict[int, int] = {}

    def add(self, chunk: pb.TokenFeatures) -> CandidateTokens | None:
        """Adds a chunk; returns the candidate's features when this was its last chunk."""
        index = chunk.index
        have = self._received.get(index, 0)
        if chunk.token_offset != have:
            raise ServerError(
                f"token features of candidate {index}: chunk at token {chunk.token_offset}, "
                f"expected {have}"
            )
        values = decode_tensor(chunk.features)
        if values.ndim != 2:
            raise ServerError(f"token features of candidate {index} have shape {values.shape}")
        self._parts.setdefault(index, []).append(values)
        self._received[index] = have + values.shape[0]
        if not chunk.last_chunk:
            return None
        parts = self._parts.pop(index)
        return CandidateTokens(index, np.concatenate(parts) if len(parts) > 1 else parts[0])

    @property
    def pending(self) -> list[int]:
        """Candidates whose last chunk has not arrived (a truncated stream)."""
        return sorted(self._parts)
