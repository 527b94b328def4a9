"""What an app keeps on device: feedback, versions, the few-call API. No torch.

- ``store`` (``records``, ``ids``): feedback (thumbs, picks, scores) and the
  sets it was on, in SQLite; ``records`` are what it hands back;
- ``registry``: versioned per-user rankers with checksums, atomic saves, rollback;
- ``lineage``: what a line of versions learned (its cursor) and what a rollback
  made it forget;
- ``learning``: the learner seam: ``UserLearner``, ``LearnerSpec`` and the one
  ``LearnReport`` every learner returns;
- ``taste``: the torch-free learner (its own room): each user's taste as a
  linear head over the candidates' parts, fitted with numpy per event and
  composed with the global ranker into one ONNX file;
- ``personal``: ``PersonalRanker``, generate -> rank -> feedback -> learn;
  ``async_personal``: ``AsyncPersonalRanker``, the same awaited; both are
  ``personal_base.PersonalBase``;
- ``dataset``, ``training_data``: grouped training data as numpy arrays, and
  feedback events turned into it (what the trainers read);
- ``checkpoint``: a ranker's kind, config and weights as numpy, the format the
  registry stores.

``taste_fit`` and ``personal_learner`` are the old homes of the taste learner,
kept only so that old imports keep working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge._lazy import lazy_exports

if TYPE_CHECKING:
    from edge.app.async_personal import (
        AsyncPersonalRanker,
    )
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
    from edge.app.ids import (
        validate_id,
    )
    from edge.app.learning import (
        IDENTITY_KEY,
        FitReport,
        LearnerSpec,
        LearnReport,
        StartedFrom,
        UserLearner,
    )
    from edge.app.lineage import (
        CURSOR_KEY,
        FORGOTTEN_KEY,
        EventRanges,
        cursor_of,
        forgotten_on_leaving,
        learnable,
        merged,
        ranges_of,
    )
    from edge.app.personal import (
        PersonalRanker,
    )
    from edge.app.personal_base import (
        ColdStart,
        PersonalBase,
        Shown,
    )
    from edge.app.records import (
        FeedbackEvent,
        FeedbackKind,
        ShownSet,
    )
    from edge.app.registry import (
        Registry,
        VersionInfo,
    )
    from edge.app.store import (
        FeedbackStore,
    )
    from edge.app.taste import (
        Pairs,
        Reaction,
        TasteConfig,
        TasteFit,
        TasteHead,
        TasteLearner,
        compose_ranker,
        graph_parts,
        preference_pairs,
    )
    from edge.app.training_data import (
        events_to_dataset,
    )

# public name -> the module that defines it (imported on first use)
_EXPORTS: dict[str, str] = {
    "ColdStart": "edge.app.personal_base",
    "Block": "edge.app.dataset",
    "BlockKind": "edge.app.dataset",
    "CURSOR_KEY": "edge.app.lineage",
    "Checkpoint": "edge.app.checkpoint",
    "EventRanges": "edge.app.lineage",
    "FORGOTTEN_KEY": "edge.app.lineage",
    "FeedbackEvent": "edge.app.records",
    "FeedbackKind": "edge.app.records",
    "FeedbackStore": "edge.app.store",
    "FitReport": "edge.app.learning",
    "Group": "edge.app.dataset",
    "GroupDataset": "edge.app.dataset",
    "IDENTITY_KEY": "edge.app.learning",
    "LearnReport": "edge.app.learning",
    "LearnerSpec": "edge.app.learning",
    "Pair": "edge.app.dataset",
    "Pairs": "edge.app.taste",
    "AsyncPersonalRanker": "edge.app.async_personal",
    "PersonalBase": "edge.app.personal_base",
    "PersonalRanker": "edge.app.personal",
    "Reaction": "edge.app.taste",
    "Registry": "edge.app.registry",
    "Shown": "edge.app.personal_base",
    "ShownSet": "edge.app.records",
    "StartedFrom": "edge.app.learning",
    "TasteConfig": "edge.app.taste",
    "TasteFit": "edge.app.taste",
    "TasteHead": "edge.app.taste",
    "TasteLearner": "edge.app.taste",
    "UserLearner": "edge.app.learning",
    "VersionInfo": "edge.app.registry",
    "compose_ranker": "edge.app.taste",
    "events_to_dataset": "edge.app.training_data",
    "graph_parts": "edge.app.taste",
    "label_kind": "edge.app.dataset",
    "cursor_of": "edge.app.lineage",
    "forgotten_on_leaving": "edge.app.lineage",
    "learnable": "edge.app.lineage",
    "merged": "edge.app.lineage",
    "ranges_of": "edge.app.lineage",
    "preference_pairs": "edge.app.taste",
    "training_features": "edge.app.dataset",
    "validate_id": "edge.app.ids",
}

__all__ = [
    "CURSOR_KEY",
    "FORGOTTEN_KEY",
    "IDENTITY_KEY",
    "AsyncPersonalRanker",
    "Block",
    "BlockKind",
    "Checkpoint",
    "ColdStart",
    "EventRanges",
    "FeedbackEvent",
    "FeedbackKind",
    "FeedbackStore",
    "FitReport",
    "Group",
    "GroupDataset",
    "LearnReport",
    "LearnerSpec",
    "Pair",
    "Pairs",
    "PersonalBase",
    "PersonalRanker",
    "Reaction",
    "Registry",
    "Shown",
    "ShownSet",
    "StartedFrom",
    "TasteConfig",
    "TasteFit",
    "TasteHead",
    "TasteLearner",
    "UserLearner",
    "VersionInfo",
    "compose_ranker",
    "cursor_of",
    "events_to_dataset",
    "forgotten_on_leaving",
    "graph_parts",
    "label_kind",
    "learnable",
    "merged",
    "preference_pairs",
    "ranges_of",
    "training_features",
    "validate_id",
]

# Names that moved or were renamed: still reachable here for old code, with a
# DeprecationWarning (see CHANGELOG.md).
_MOVED: dict[str, str] = {
    "BLOCKS": "edge.runtime.parts.PARTS",
    "Part": "edge.runtime.Part",
    "PersonalLearner": "edge.app.TasteLearner",
    "UpdateReport": "edge.app.LearnReport",
    "graph_blocks": "edge.app.graph_parts",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, _MOVED)
