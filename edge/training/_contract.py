"""The ranker contract: what every kind shares, and the input families a kind chooses from.

Every kind has a name, a config dataclass, a parameter count and numpy
checkpoints; that is ``RankerModule``. What a kind *reads* differs, so
``RankerModule`` declares no ``forward`` and each kind derives from the base
of its input family instead:

- ``VectorRanker`` (list, point): one vector per instruction and per candidate,
  ``(instruction (B, d), candidates (B, K, d)) -> scores (B, K)``, and
  optionally (representation v2) more parts per candidate, each a named input:
  ``mean_candidates (B, K, d)``, ``signals (B, K, S)`` (``input_names``);
- ``edge.swift.SwiftRanker``: one vector per response token,
  ``(tokens (B, K, T, d), mask (B, K, T)) -> scores (B, K)``.

A ranker's forward arguments, by name, are exactly the inputs of its exported
ONNX graph. Each family is trained, exported and checked by its own functions, named
in ``entry_points``; a function handed a ranker of another family refuses it
(``require_family``) with the error of its step, naming the kind and the
function that serves it, before any tensor reaches the wrong ``forward``.

This module sits outside ``edge.training.rankers`` because the kinds' own
modules (``rankers/list.py``, ...) derive from it while the kinds table in
``rankers/__init__.py`` imports them; other rooms import it from there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from edge.app.checkpoint import Checkpoint
from edge.runtime.onnx_meta import INPUT_CANDIDATES, INPUT_INSTRUCTION
from edge.runtime.parts import Part

__all__ = ["RankerModule", "Step", "VectorRanker", "count_parameters"]

# The steps of a ranker's life that differ between input families.
Step = Literal["train", "export", "parity"]


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars, the budget the paper caps at 0.5M."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class RankerModule(nn.Module):
    """Base of every kind: subclass ``VectorRanker`` (or another family) and set ``kind``."""

    kind: ClassVar[str]
    config: Any
    # True for heads that read per-token features (SWIFT): the client then asks
    # central for them; last-token heads never pay for the extra bandwidth.
    needs_token_features: ClassVar[bool] = False
    # The function serving each step for this family, named when another refuses it.
    entry_points: ClassVar[Mapping[Step, str]] = {}

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


class VectorRanker(RankerModule):
    """Scores candidates from vectors per candidate: ``(B, d), (B, K, d), ... -> (B, K)``.

    Every input is a float32 tensor passed by name, ``input_names`` in order:
    always ``instruction`` and ``candidates`` (the last-token vectors), then
    whichever optional parts the ranker reads (``mean_candidates``,
    ``signals``). That is exactly the ONNX graph ``edge.runtime.RankingSession``
    runs; list and point rankers share it so training, export and the runtime
    treat them interchangeably. The defaults here are the paper's two inputs.
    """

    entry_points: ClassVar[Mapping[Step, str]] = {
        "train": "edge.training.train()",
        "export": "edge.training.export_onnx()",
        "parity": "edge.training.check_parity()",
    }

    @property
    def input_names(self) -> tuple[str, ...]:
        """The graph inputs ``forward`` takes by name, in graph order."""
        return (INPUT_INSTRUCTION, INPUT_CANDIDATES)

    @property
    def parts(self) -> tuple[Part, ...]:
        """The parts of a candidate read, e.g. ("last",) or ("last", "mean", "signals")."""
        return ("last",)

    def forward(self, instruction: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
