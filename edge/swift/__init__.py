"""SWIFT (arXiv 2505.12225): a token-level head over per-token features, in one room.

- ``head`` (torch): ``SwiftRanker``, one ``Linear(d, 2)`` giving a gate and a
  reward per token, pooled as a gated mean;
- ``train`` (torch): ragged per-token datasets and the training loop;
- ``export`` (torch): ONNX with dynamic batch, K and token length, plus parity;
- ``scoring`` (no torch): onnxruntime scoring, ``TokenRankingSession``;
- ``tokens`` (no torch): padding ragged per-token arrays;
- ``synthetic``: planted per-token datasets for tests and benchmarks.

This room sits above ``edge.training``: the head derives from its ranker
contract and registers the ``"swift"`` kind in its table when imported.

An app that only ranks with SWIFT needs ``scoring`` and ``tokens``, which
import neither torch nor the torch modules of this room.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge._lazy import lazy_exports

if TYPE_CHECKING:
    from edge.swift.export import (
        check_swift_parity,
        export_swift_onnx,
    )
    from edge.swift.head import (
        SwiftConfig,
        SwiftRanker,
        TokenSource,
    )
    from edge.swift.scoring import (
        TokenRankingSession,
    )
    from edge.swift.synthetic import (
        planted_token_dataset,
    )
    from edge.swift.tokens import (
        pad_groups,
        pad_tokens,
    )
    from edge.swift.train import (
        SwiftTrainConfig,
        SwiftTrainResult,
        TokenDataset,
        TokenGroup,
        batch_loss,
        build_swift,
        evaluate_swift_loss,
        score_groups,
        swift_top1,
        train_swift,
    )

# public name -> the module that defines it (imported on first use)
_EXPORTS: dict[str, str] = {
    "SwiftConfig": "edge.swift.head",
    "SwiftRanker": "edge.swift.head",
    "SwiftTrainConfig": "edge.swift.train",
    "SwiftTrainResult": "edge.swift.train",
    "TokenDataset": "edge.swift.train",
    "TokenGroup": "edge.swift.train",
    "TokenRankingSession": "edge.swift.scoring",
    "TokenSource": "edge.swift.head",
    "batch_loss": "edge.swift.train",
    "build_swift": "edge.swift.train",
    "check_swift_parity": "edge.swift.export",
    "evaluate_swift_loss": "edge.swift.train",
    "export_swift_onnx": "edge.swift.export",
    "pad_groups": "edge.swift.tokens",
    "pad_tokens": "edge.swift.tokens",
    "planted_token_dataset": "edge.swift.synthetic",
    "score_groups": "edge.swift.train",
    "swift_top1": "edge.swift.train",
    "train_swift": "edge.swift.train",
}

__all__ = [
    "SwiftConfig",
    "SwiftRanker",
    "SwiftTrainConfig",
    "SwiftTrainResult",
    "TokenDataset",
    "TokenGroup",
    "TokenRankingSession",
    "TokenSource",
    "batch_loss",
    "build_swift",
    "check_swift_parity",
    "evaluate_swift_loss",
    "export_swift_onnx",
    "pad_groups",
    "pad_tokens",
    "planted_token_dataset",
    "score_groups",
    "swift_top1",
    "train_swift",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
