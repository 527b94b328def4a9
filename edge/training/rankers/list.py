"""ListRanker: candidates attend to each other and to the instruction.

``[i~, r~_1..r~_K] = Trans([Proj(i), E(r_1)..E(r_K)])`` with one pre-norm
transformer block (one attention head), then ``s_k = relevance(i~, r~_k)``.
Attention lets a candidate's score depend on the rest of the list (e.g.
agreement among samples, as self-consistency exploits), which is why the
paper's listwise variant is the stronger of the two on MATH. ``E`` is the
paper's ``Proj`` for a last-token vector; for more parts (a mean vector, the
signals block) it is the sum of each part's own embedding, and the signals also
add a direct term to the score (see ``edge.training.rankers._parts``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from edge.training.rankers._parts import PartRanker, Representation, VectorPart
from edge.training.rankers._relevance import Relevance, RelevanceKind, check_relevance

__all__ = ["ListRanker", "ListRankerConfig"]


@dataclass(frozen=True)
class ListRankerConfig(Representation):
    """Shape and head of a ListRanker (defaults: the paper's, ~0.30M params at 4096-d)."""

    feature_size: int  # d, hidden size of the LLM features (576 SmolLM2-135M, 4096 Llama-8B)
    hidden_size: int = 64  # width of each part's projection and of the transformer block
    ffn_size: int = 128  # inner width of the block's feed-forward layer
    relevance: RelevanceKind = "cosine"  # "cosine" for binary labels, "linear" for real ones
    temperature: float = 0.1  # cosine scores are divided by this (sharper softmax/sigmoid)
    dropout: float = 0.0  # dropout in the block during training; 0 disables
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


class _Block(nn.Module):
    """One pre-norm transformer block with a single attention head.

    Written out by hand rather than with nn.MultiheadAttention so the exported ONNX
    graph is a handful of MatMul/Softmax nodes with no fixed sequence length.
    """

    def __init__(self, dim: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Linear(ffn, dim))
        self.dropout = nn.Dropout(dropout)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        attn = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * self.scale, dim=-1)
        x = x + self.dropout(self.out(torch.matmul(attn, v)))
        return x + self.dropout(self.ffn(self.norm2(x)))


class ListRanker(PartRanker):
    kind: ClassVar[str] = "list"

    def __init__(self, config: ListRankerConfig) -> None:
        super().__init__()
        self.config = config
        self._init_inputs(config, config.feature_size, config.hidden_size)
        self.block = _Block(config.hidden_size, config.ffn_size, config.dropout)
        self.relevance = Relevance(config.hidden_size, config.relevance, config.temperature)

    def forward(
        self,
        instruction: torch.Tensor,
        candidates: torch.Tensor,
        mean_candidates: torch.Tensor | None = None,
        signals: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, d), (B, K, d) [, (B, K, d), (B, K, S)] float32 -> (B, K) scores, higher is better."""
        if self.config.is_paper:  # one projection of the whole sequence, as in the paper
            seq = self.proj(torch.cat([instruction.unsqueeze(1), candidates], dim=1))
        else:
            inst = self.embed_instruction(instruction).unsqueeze(1)
            seq = torch.cat([inst, self.embed_candidates(candidates, mean_candidates, signals)], 1)
        hidden = self.block(seq)  # (B, 1 + K, h)
        return self.combine(self.relevance(hidden[:, 0], hidden[:, 1:]), signals)
