"""The values the edge SDK hands to apps: candidates with decoded features."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = ["Candidate", "FinishReason", "Generation", "Usage"]

FinishReason = Literal["eos", "length"]


@dataclass(frozen=True)
class Candidate:
    """One sampled response with its feature vector."""

    index: int  # position among the K candidates of its generation, 0-based
    text: str  # the response text, end-of-sequence token excluded
    token_ids: tuple[int, ...]  # generated token ids, end-of-sequence excluded
    finish_reason: FinishReason  # "eos" (the model stopped) or "length" (hit the limit)
    cumulative_logprob: float  # sum of token log-probabilities under the model
    feature: np.ndarray = field(repr=False)  # (hidden,) float32, last token of prompt+response
    # (T, D) float32 per-token features (SWIFT), one row per response token; None unless
    # the request asked for them (CentralClient.generate(token_features=...) or a ranker
    # with needs_token_features)
    token_features: np.ndarray | None = field(default=None, repr=False)
    # (hidden,) float32 mean of the feature layer's hidden state over the response tokens
    # (prompt and end-of-sequence excluded); None when the request did not ask for it or the
    # server predates it (representation v2)
    mean_feature: np.ndarray | None = field(default=None, repr=False)
    # mean entropy (nats) of the model's next-token distribution over the response tokens at
    # temperature 1; None when the server did not send it
    mean_entropy: float | None = None

    @property
    def num_tokens(self) -> int:
        """Generated tokens, end-of-sequence excluded."""
        return len(self.token_ids)

    @property
    def mean_logprob(self) -> float:
        """Average token log-probability at temperature 1 (0.0 for an empty response)."""
        return self.cumulative_logprob / len(self.token_ids) if self.token_ids else 0.0


@dataclass(frozen=True)
class Usage:
    """What one Generate call cost central: the last event of its stream."""

    prompt_tokens: int  # prompt length after the chat template
    generated_tokens: int  # response tokens over all K candidates
    seconds: float  # wall time central spent on the request


@dataclass(frozen=True)
class Generation:
    """K candidates for one prompt, plus the instruction feature they share."""

    prompt: str  # the prompt as the app gave it
    instruction: np.ndarray = field(repr=False)  # (hidden,) float32, last prompt token
    candidates: tuple[Candidate, ...] = ()  # sorted by index
    layer_index: int = 0  # hidden-state layer the features come from
    usage: Usage | None = None  # what the call cost central; None when the stream sent none

    @property
    def features(self) -> np.ndarray:
        """The candidates' features stacked, shape (K, hidden)."""
        return np.stack([c.feature for c in self.candidates])

    @property
    def token_features(self) -> list[np.ndarray]:
        """Each candidate's (T_k, D) per-token features; empty when they were not requested."""
        return [c.token_features for c in self.candidates if c.token_features is not None]

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.candidates]
