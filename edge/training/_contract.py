"""What every ranker module shares: the projection, the I/O contract, checkpoints.

Both rankers map ``(instruction (B, d), candidates (B, K, d)) -> scores (B, K)``
with float32 tensors and no other inputs, which is exactly the ONNX graph the
runtime expects; keeping one signature lets export, training and the runtime
treat the two kinds interchangeably.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from edge.app.checkpoint import Checkpoint

__all__ = ["RankerModule", "count_parameters"]


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars, the budget the paper caps at 0.5M."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class RankerModule(nn.Module):
    """Base class: subclasses set ``kind`` and implement ``forward``."""

    kind: ClassVar[str]
    config: Any
    # True for heads that read per-token features (SWIFT): the client then asks
    # central for them; last-token heads never pay for the extra bandwidth.
    needs_token_features: ClassVar[bool] = False

    def forward(self, instruction: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def feature_size(self) -> int:
        return int(self.config.feature_size)

    def num_parameters(self) -> int:
        return count_parameters(self)

    def to_checkpoint(self) -> Checkpoint:
        """Copy the weights out as float32 numpy arrays (detached from training)."""
        weights = {
            k: v.detach().cpu().numpy().astype(np.float32, copy=True)
            for k, v in self.state_dict().items()
        }
        return Checkpoint(kind=self.kind, config=dataclasses.asdict(self.config), weights=weights)

    def load_checkpoint(self, ckpt: Checkpoint) -> None:
        """Load weights saved by ``to_checkpoint``; shapes must match exactly."""
        state = {
            k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in ckpt.weights.items()
        }
        self.load_state_dict(state, strict=True)
