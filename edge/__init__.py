"""Language Ranker edge SDK: rank, store feedback, and learn per-user rankers on device.

Importing ``edge`` never imports torch: ranking with an exported ONNX ranker
(``Ranker``, ``RankingSession``, ``Registry.open``) and recording feedback
(``FeedbackStore``) need only numpy and onnxruntime. The training side
(``ListRanker``, ``PointRanker``, ``train``, ``export_onnx``, ``Learner``, ...) is
loaded on first attribute access, so apps that ship inference only can leave
torch out. The central client is loaded lazily as well (it needs grpc).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from edge._errors import (
    CentralError,
    ConnectionLostError,
    CorruptModelError,
    CorruptStoreError,
    DeadlineExceededError,
    ExportError,
    FeatureError,
    InvalidRequestError,
    RankerError,
    RegistryError,
    ServerError,
    StoreError,
    TrainingError,
    UnknownCandidateSetError,
    UnknownUserError,
)
from edge._types import Candidate, Generation
from edge.checkpoint import Checkpoint
from edge.data import Group, GroupDataset, Pair
from edge.personal import PersonalRanker, Shown
from edge.registry import Registry, VersionInfo
from edge.runtime import Ranker, Ranking, RankingSession
from edge.store import FeedbackEvent, FeedbackStore, ShownSet, events_to_dataset

if TYPE_CHECKING:
    from edge.async_client import AsyncCentralClient
    from edge.client import CentralClient
    from edge.export import ParityReport, check_parity, export_onnx
    from edge.learner import Learner, LearnerConfig, LearnReport
    from edge.rankers import (
        ListRanker,
        ListRankerConfig,
        PointRanker,
        PointRankerConfig,
        build_ranker,
        count_parameters,
        from_checkpoint,
        make_config,
    )
    from edge.train import TrainConfig, TrainResult, evaluate_loss, top1_accuracy, train

# name -> submodule holding it; imported on first access (these need torch or grpc).
_LAZY: dict[str, str] = {
    "CentralClient": "edge.client",
    "AsyncCentralClient": "edge.async_client",
    "ListRanker": "edge.rankers",
    "ListRankerConfig": "edge.rankers",
    "PointRanker": "edge.rankers",
    "PointRankerConfig": "edge.rankers",
    "build_ranker": "edge.rankers",
    "count_parameters": "edge.rankers",
    "from_checkpoint": "edge.rankers",
    "make_config": "edge.rankers",
    "TrainConfig": "edge.train",
    "TrainResult": "edge.train",
    "evaluate_loss": "edge.train",
    "top1_accuracy": "edge.train",
    "train": "edge.train",
    "ParityReport": "edge.export",
    "check_parity": "edge.export",
    "export_onnx": "edge.export",
    "LearnReport": "edge.learner",
    "Learner": "edge.learner",
    "LearnerConfig": "edge.learner",
}

__all__ = [
    "AsyncCentralClient",
    "Candidate",
    "CentralClient",
    "CentralError",
    "Checkpoint",
    "ConnectionLostError",
    "CorruptModelError",
    "CorruptStoreError",
    "DeadlineExceededError",
    "ExportError",
    "FeatureError",
    "FeedbackEvent",
    "FeedbackStore",
    "Generation",
    "Group",
    "GroupDataset",
    "InvalidRequestError",
    "LearnReport",
    "Learner",
    "LearnerConfig",
    "ListRanker",
    "ListRankerConfig",
    "Pair",
    "ParityReport",
    "PersonalRanker",
    "PointRanker",
    "PointRankerConfig",
    "Ranker",
    "RankerError",
    "Ranking",
    "RankingSession",
    "Registry",
    "RegistryError",
    "ServerError",
    "Shown",
    "ShownSet",
    "StoreError",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "UnknownCandidateSetError",
    "UnknownUserError",
    "VersionInfo",
    "build_ranker",
    "check_parity",
    "count_parameters",
    "evaluate_loss",
    "events_to_dataset",
    "export_onnx",
    "from_checkpoint",
    "make_config",
    "top1_accuracy",
    "train",
]


def __getattr__(name: str) -> Any:
    """Import torch/grpc-dependent names on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
