"""PointRanker: each candidate is scored on its own against the instruction.

``i~ = MLP(Proj(i))``, ``r~_k = MLP(Proj(r_k))`` with one projection and one MLP
shared by instruction and candidates, then ``s_k = relevance(i~, r~_k)``. Without
attention across candidates the score of a candidate does not depend on which
others were sampled, which makes the ranker cheap and easy to reason about.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from edge.training._contract import VectorRanker
from edge.training.rankers._relevance import Relevance, RelevanceKind

__all__ = ["PointRanker", "PointRankerConfig"]


@dataclass
class PointRankerConfig:
    """Shape and head of a PointRanker (defaults: the paper's, ~0.27M params at 4096-d)."""

    feature_size: int  # d, hidden size of the LLM features (576 SmolLM2-135M, 4096 Llama-8B)
    hidden_size: int = 64  # width of the shared projection Proj: d -> hidden_size
    mlp_size: int = 64  # width of the shared MLP's inner layer
    relevance: RelevanceKind = "cosine"  # "cosine" for binary labels, "linear" for real ones
    temperature: float = 0.1  # cosine scores are divided by this (sharper softmax/sigmoid)
    dropout: float = 0.0  # dropout after the projection during training; 0 disables


class PointRanker(VectorRanker):
    kind: ClassVar[str] = "point"

    def __init__(self, config: PointRankerConfig) -> None:
        super().__init__()
        self.config = config
        self.proj = nn.Linear(config.feature_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.mlp = nn.Sequential(
            nn.Linear(config.hidden_size, config.mlp_size),
            nn.GELU(),
            nn.Linear(config.mlp_size, config.hidden_size),
        )
        self.relevance = Relevance(config.hidden_size, config.relevance, config.temperature)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.dropout(self.proj(x)))

    def forward(self, instruction: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """(B, d), (B, K, d) float32 -> (B, K) scores, higher is better."""
        return self.relevance(self.encode(instruction), self.encode(candidates))
