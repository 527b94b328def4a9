"""PointRanker: each candidate is scored on its own against the instruction.

``i~ = MLP(Proj(i))``, ``r~_k = MLP(E(r_k))`` with one MLP shared by instruction
and candidates, then ``s_k = relevance(i~, r~_k)``. Without attention across
candidates the score of a candidate does not depend on which others were
sampled, which makes the ranker cheap and easy to reason about. ``E`` is the
paper's ``Proj`` for a last-token vector; for more parts (a mean vector, the
signals block) it is the sum of each part's own embedding, and the signals also
add a direct term to the score (see ``edge.training.rankers._parts``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from edge.training.rankers._parts import PartRanker, Representation, VectorPart
from edge.training.rankers._relevance import Relevance, RelevanceKind, check_relevance

__all__ = ["PointRanker", "PointRankerConfig"]


@dataclass(frozen=True)
class PointRankerConfig(Representation):
    """Shape and head of a PointRanker (defaults: the paper's, ~0.27M params at 4096-d)."""

    feature_size: int  # d, hidden size of the LLM features (576 SmolLM2-135M, 4096 Llama-8B)
    hidden_size: int = 64  # width of each part's projection: d -> hidden_size
    mlp_size: int = 64  # width of the shared MLP's inner layer
    relevance: RelevanceKind = "cosine"  # "cosine" for binary labels, "linear" for real ones
    temperature: float = 0.1  # cosine scores are divided by this (sharper softmax/sigmoid)
    dropout: float = 0.0  # dropout after the projection during training; 0 disables
    # The parts of a candidate it reads (edge.training.rankers._parts); defaults: the paper's.
    vectors: tuple[VectorPart, ...] = ("last",)  # hidden-state vectors: "last" and/or "mean"
    signal_names: tuple[str, ...] = ()  # columns of the signals input; () reads no signals
    signals_version: int = 0  # SIGNALS_VERSION those columns follow; 0 without signals
    # Initial weights of the direct signal term by name, in standardised units. When given,
    # the hidden-state score starts gated off: the untrained ranker ranks by these signals
    # alone ({"mean_logprob": 1.0}: the highest mean log-probability first).
    signal_prior: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_relevance(self.relevance, self.temperature)


class PointRanker(PartRanker):
    kind: ClassVar[str] = "point"

    def __init__(self, config: PointRankerConfig) -> None:
        super().__init__()
        self.config = config
        self._init_inputs(config, config.feature_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.mlp = nn.Sequential(
            nn.Linear(config.hidden_size, config.mlp_size),
            nn.GELU(),
            nn.Linear(config.mlp_size, config.hidden_size),
        )
        self.relevance = Relevance(config.hidden_size, config.relevance, config.temperature)

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        """An embedding (..., h) through the shared dropout and MLP."""
        return self.mlp(self.dropout(x))

    def forward(
        self,
        instruction: torch.Tensor,
        candidates: torch.Tensor,
        mean_candidates: torch.Tensor | None = None,
        signals: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, d), (B, K, d) [, (B, K, d), (B, K, S)] float32 -> (B, K) scores, higher is better."""
        inst = self._transform(self.embed_instruction(instruction))
        cand = self._transform(self.embed_candidates(candidates, mean_candidates, signals))
        return self.combine(self.relevance(inst, cand), signals)
