"""Relevance between the encoded instruction and each encoded candidate.

The paper uses two heads: cosine similarity (optionally divided by a temperature)
when labels are binary, because only the *direction* of the encodings matters for
"good vs bad"; and a learnable linear map of ``concat(i, r)`` when labels are real
values that need an unbounded, calibrated scale.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from edge._errors import ConfigError

__all__ = ["Relevance", "RelevanceKind", "check_relevance"]

RelevanceKind = Literal["cosine", "linear"]


def check_relevance(kind: str, temperature: float) -> None:
    """Raise ConfigError unless ``kind`` is a relevance head and ``temperature`` > 0."""
    if kind not in ("cosine", "linear"):
        raise ConfigError(f"relevance must be 'cosine' or 'linear', got {kind!r}")
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")


class Relevance(nn.Module):
    """Score (B, h) instructions against (B, K, h) candidates -> (B, K)."""

    def __init__(self, dim: int, kind: RelevanceKind, temperature: float) -> None:
        super().__init__()
        check_relevance(kind, temperature)
        self.kind = kind
        self.dim = dim
        self.temperature = float(temperature)
        # W . concat(i, r) + b, only used by the linear head.
        self.linear = nn.Linear(2 * dim, 1) if kind == "linear" else None

    def forward(self, instruction: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        if self.linear is None:
            i = F.normalize(instruction, dim=-1, eps=1e-6)
            r = F.normalize(candidates, dim=-1, eps=1e-6)
            return (r * i.unsqueeze(1)).sum(-1) / self.temperature
        # W . concat(i, r) split as W_i . i + W_r . r, so i is not copied K times.
        w = self.linear.weight
        inst_part = F.linear(instruction, w[:, : self.dim])  # (B, 1)
        cand_part = F.linear(candidates, w[:, self.dim :], self.linear.bias)  # (B, K, 1)
        return (cand_part + inst_part.unsqueeze(1)).squeeze(-1)
