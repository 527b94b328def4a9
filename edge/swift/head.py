"""SWIFT: a token-level gated reward over per-token features (arXiv 2505.12225).

Where the Language Ranker heads read one vector per candidate (the last
token's hidden state), SWIFT reads one vector per *response token* and maps
each with a single ``Linear(d, 2)``: channel 0 through a sigmoid is a gate
``g_t`` (how much this token matters), channel 1 is a token reward ``r_t``.
The candidate's score is the gated mean ``sum(g_t r_t) / sum(g_t)`` over its
real tokens. The gate lets the head learn *where* in a response the evidence
is (the answer digits, a closing bracket) without any attention machinery.

Inputs are padded: ``tokens (B, K, T, d)`` with ``mask (B, K, T)`` (1 for a
real token, 0 for padding). Padding never changes a score: padded positions
are zeroed before the linear map (so even a NaN there cannot leak) and
excluded from both sums. A candidate with no tokens at all scores 0.

The per-token vector is either hidden states (``source="hidden"``: the
concatenation of ``layers``, d = len(layers) * hidden) or output-distribution
features for models whose hidden states are not exposed (``source="logits"``:
log-prob of the sampled token, entropy, top-k log-probs, d = 2 + k). The
head is the same; only the request to central differs, which is why the
config records what to ask for.

An optional per-dimension standardisation (``shift``/``scale`` buffers, fit
on training tokens) keeps AdamW well conditioned across layers whose scales
differ by orders of magnitude; it is an affine map before a linear one, so
the head is still exactly one linear layer per token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from edge._errors import ConfigError, MissingDependencyError

try:
    import torch
except ImportError as error:  # a torch-free install: say which extra provides it
    raise MissingDependencyError("edge.swift.head", "torch", "train") from error
from torch import nn

from edge.training.rankers import RANKER_KINDS, RankerModule, Step

__all__ = ["SwiftConfig", "SwiftRanker", "TokenSource"]

TokenSource = Literal["hidden", "logits"]


@dataclass(frozen=True)
class SwiftConfig:
    """Shape of a SWIFT head and the per-token features it was trained on."""

    feature_size: int  # d per token: len(layers) * hidden, or 2 + top_logprobs in logits mode
    source: TokenSource = "hidden"  # "hidden": hidden states; "logits": output distribution
    layers: tuple[int, ...] = ()  # hidden-state layers asked of central
    top_logprobs: int = 0  # logits mode: top-k log-probs per token asked of central (k)
    eps: float = 1e-6  # floor on sum(g_t) so an all-padding candidate divides safely

    def __post_init__(self) -> None:
        if self.feature_size < 1:
            raise ConfigError(f"feature_size must be >= 1, got {self.feature_size}")
        if self.source not in ("hidden", "logits"):
            raise ConfigError(f"source must be 'hidden' or 'logits', got {self.source!r}")
        if self.source == "logits" and self.feature_size != 2 + self.top_logprobs:
            raise ConfigError(
                f"logits mode has 2 + top_logprobs = {2 + self.top_logprobs} features per "
                f"token, config says {self.feature_size}"
            )
        # a list from JSON (checkpoints, metadata) or any sequence in; a tuple kept
        object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))


class SwiftRanker(RankerModule):
    """``(tokens (B, K, T, d), mask (B, K, T)) -> scores (B, K)``: gated mean token reward.

    Its own input family: it reads per-token features, so it is trained,
    exported and scored by the functions of ``edge.swift``, and the Language
    Ranker ones (``edge.training.train``, ``export_onnx``...) refuse it.
    """

    kind: ClassVar[str] = "swift"
    needs_token_features: ClassVar[bool] = True
    entry_points: ClassVar[Mapping[Step, str]] = {
        "train": "edge.swift.train_swift()",
        "export": "edge.swift.export_swift_onnx()",
        "parity": "edge.swift.check_swift_parity()",
    }
    shift: torch.Tensor  # (d,) buffer: per-dimension mean of the training tokens
    scale: torch.Tensor  # (d,) buffer: their standard deviation (1 where constant)

    def __init__(self, config: SwiftConfig) -> None:
        super().__init__()
        self.config = config
        d = config.feature_size
        self.head = nn.Linear(d, 2)  # channel 0: gate logit, channel 1: token reward
        # Standardisation applied before the head; identity until `fit_normalization`.
        self.register_buffer("shift", torch.zeros(d))
        self.register_buffer("scale", torch.ones(d))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, K, T, d), (B, K, T) float32 -> (B, K) scores, higher is better."""
        real = mask > 0.5
        x = torch.where(real.unsqueeze(-1), (tokens - self.shift) / self.scale, 0.0)
        logits = self.head(x)  # (B, K, T, 2)
        gate = torch.sigmoid(logits[..., 0]) * real.to(logits.dtype)
        reward = torch.where(real, logits[..., 1], 0.0)
        return (gate * reward).sum(-1) / gate.sum(-1).clamp_min(self.config.eps)

    def token_terms(
        self, tokens: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token (gate, reward), each (B, K, T): for explaining which tokens drove a score."""
        real = mask > 0.5
        x = torch.where(real.unsqueeze(-1), (tokens - self.shift) / self.scale, 0.0)
        logits = self.head(x)
        return torch.sigmoid(logits[..., 0]) * real, torch.where(real, logits[..., 1], 0.0)

    @torch.no_grad()
    def fit_normalization(self, rows: np.ndarray) -> None:
        """Set shift/scale to the mean/std of real token rows ``(N, d)`` (train data only)."""
        rows = np.asarray(rows, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.config.feature_size or not len(rows):
            raise ValueError(f"expected (N, {self.config.feature_size}) rows, got {rows.shape}")
        mean = rows.mean(0)
        std = rows.std(0)
        self.shift.copy_(torch.from_numpy(mean.astype(np.float32)))
        self.scale.copy_(torch.from_numpy(np.where(std > 1e-6, std, 1.0).astype(np.float32)))


# The "swift" entry of the kinds table, which names this module (edge.swift sits above it).
RANKER_KINDS["swift"] = (SwiftRanker, SwiftConfig)
