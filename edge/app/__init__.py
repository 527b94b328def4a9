"""What an app keeps on device: feedback, versions, the few-call API. No torch.

- ``store``: feedback (thumbs, picks, scores) in SQLite, turned into datasets;
- ``registry``: versioned per-user rankers with checksums, atomic saves, rollback;
- ``personal``: ``PersonalRanker``, generate -> rank -> feedback -> learn;
- ``dataset``: grouped training data as numpy arrays (what the store produces
  and the trainers read);
- ``checkpoint``: a ranker's kind, config and weights as numpy, the format the
  registry stores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge._lazy import lazy_exports

if TYPE_CHECKING:
    from edge.app.checkpoint import (
        Checkpoint,
    )
    from edge.app.dataset import (
        Block,
        BlockKind,
        Group,
        GroupDataset,
        Pair,
        label_kind,
        training_features,
    )
    from edge.app.personal import (
        PersonalRanker,
        Shown,
    )
    from edge.app.registry import (
        Registry,
        VersionInfo,
        validate_id,
    )
    from edge.app.store import (
        FeedbackEvent,
        FeedbackKind,
        FeedbackStore,
        ShownSet,
        events_to_dataset,
    )

# public name -> the module that defines it (imported on first use)
_EXPORTS: dict[str, str] = {
    "Block": "edge.app.dataset",
    "BlockKind": "edge.app.dataset",
    "Checkpoint": "edge.app.checkpoint",
    "FeedbackEvent": "edge.app.store",
    "FeedbackKind": "edge.app.store",
    "FeedbackStore": "edge.app.store",
    "Group": "edge.app.dataset",
    "GroupDataset": "edge.app.dataset",
    "Pair": "edge.app.dataset",
    "PersonalRanker": "edge.app.personal",
    "Registry": "edge.app.registry",
    "Shown": "edge.app.personal",
    "ShownSet": "edge.app.store",
    "VersionInfo": "edge.app.registry",
    "events_to_dataset": "edge.app.store",
    "label_kind": "edge.app.dataset",
    "training_features": "edge.app.dataset",
    "validate_id": "edge.app.registry",
}

__all__ = [
    "Block",
    "BlockKind",
    "Checkpoint",
    "FeedbackEvent",
    "FeedbackKind",
    "FeedbackStore",
    "Group",
    "GroupDataset",
    "Pair",
    "PersonalRanker",
    "Registry",
    "Shown",
    "ShownSet",
    "VersionInfo",
    "events_to_dataset",
    "label_kind",
    "training_features",
    "validate_id",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
