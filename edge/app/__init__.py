"""What an app keeps on device: feedback, versions, the few-call API. No torch.

- ``store``: feedback (thumbs, picks, scores) in SQLite, turned into datasets;
- ``registry``: versioned per-user rankers with checksums, atomic saves, rollback;
- ``personal``: ``PersonalRanker``, generate -> rank -> feedback -> learn;
- ``personal_learner``, ``taste_fit``, ``taste``: the torch-free learner: each
  user's taste as a linear head over the candidates' vectors and signals, fitted
  with numpy per event and composed with the global ranker into one ONNX file;
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
        Part,
        label_kind,
        training_features,
    )
    from edge.app.personal import (
        PersonalRanker,
        Shown,
    )
    from edge.app.personal_learner import (
        PersonalLearner,
        UpdateReport,
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
    from edge.app.taste import (
        BLOCKS,
        TasteHead,
        compose_ranker,
        graph_blocks,
    )
    from edge.app.taste_fit import (
        FitReport,
        Pairs,
        Reaction,
        TasteConfig,
        TasteFit,
        preference_pairs,
    )

# public name -> the module that defines it (imported on first use)
_EXPORTS: dict[str, str] = {
    "BLOCKS": "edge.app.taste",
    "Block": "edge.app.dataset",
    "BlockKind": "edge.app.dataset",
    "Checkpoint": "edge.app.checkpoint",
    "FeedbackEvent": "edge.app.store",
    "FeedbackKind": "edge.app.store",
    "FeedbackStore": "edge.app.store",
    "FitReport": "edge.app.taste_fit",
    "Group": "edge.app.dataset",
    "GroupDataset": "edge.app.dataset",
    "Pair": "edge.app.dataset",
    "Pairs": "edge.app.taste_fit",
    "Part": "edge.app.dataset",
    "PersonalLearner": "edge.app.personal_learner",
    "PersonalRanker": "edge.app.personal",
    "Reaction": "edge.app.taste_fit",
    "Registry": "edge.app.registry",
    "Shown": "edge.app.personal",
    "ShownSet": "edge.app.store",
    "TasteConfig": "edge.app.taste_fit",
    "TasteFit": "edge.app.taste_fit",
    "TasteHead": "edge.app.taste",
    "UpdateReport": "edge.app.personal_learner",
    "VersionInfo": "edge.app.registry",
    "compose_ranker": "edge.app.taste",
    "events_to_dataset": "edge.app.store",
    "graph_blocks": "edge.app.taste",
    "label_kind": "edge.app.dataset",
    "preference_pairs": "edge.app.taste_fit",
    "training_features": "edge.app.dataset",
    "validate_id": "edge.app.registry",
}

__all__ = [
    "BLOCKS",
    "Block",
    "BlockKind",
    "Checkpoint",
    "FeedbackEvent",
    "FeedbackKind",
    "FeedbackStore",
    "FitReport",
    "Group",
    "GroupDataset",
    "Pair",
    "Pairs",
    "Part",
    "PersonalLearner",
    "PersonalRanker",
    "Reaction",
    "Registry",
    "Shown",
    "ShownSet",
    "TasteConfig",
    "TasteFit",
    "TasteHead",
    "UpdateReport",
    "VersionInfo",
    "compose_ranker",
    "events_to_dataset",
    "graph_blocks",
    "label_kind",
    "preference_pairs",
    "training_features",
    "validate_id",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
