"""Training list and point rankers with torch on the CPU, and exporting them to ONNX.

Everything here needs the ``train`` extra (torch, onnx):

- ``rankers``: the torch modules, one file per family, built from a config;
  ``RANKER_KINDS`` is the table of kinds (SWIFT's head, in ``edge.swift`` above
  this room, registers itself there);
- ``losses``, ``loop``: listwise KL, BCE, MSE, pairwise; the seeded training loop;
- ``export``: ONNX export with dynamic K and a parity check against torch;
- ``learner``: incremental learning from the feedback store with replay;
- ``synthetic``: planted datasets for tests and benchmarks.

``check_ranker(kind)``, the contract every kind passes, sits above the
families it checks, in ``edge.checks``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge._errors import require_extra
from edge._lazy import lazy_exports

# Every module of this room needs torch: say which extra provides it, once, here.
require_extra("torch", extra="train", what="edge.training")

if TYPE_CHECKING:
    from edge.training.export import (
        Exporter,
        ParityReport,
        check_parity,
        export_onnx,
        exporting,
        finish_export,
        ranker_metadata,
        trace_onnx,
    )
    from edge.training.learner import (
        Learner,
        LearnerConfig,
    )
    from edge.training.loop import (
        TrainConfig,
        TrainResult,
        block_loss,
        evaluate_loss,
        optimizer_step,
        top1_accuracy,
        train,
    )
    from edge.training.losses import (
        listwise_kl,
        mse,
        pairwise_logistic,
        pointwise_bce,
    )
    from edge.training.rankers import (
        RANKER_KINDS,
        RECOMMENDED_SIGNAL_PRIOR,
        RECOMMENDED_VECTORS,
        VECTOR_PARTS,
        ListRanker,
        ListRankerConfig,
        PartRanker,
        PointRanker,
        PointRankerConfig,
        RankerConfig,
        RankerModule,
        Representation,
        Step,
        VectorPart,
        VectorRanker,
        build_ranker,
        count_parameters,
        from_checkpoint,
        kinds_of,
        make_config,
        recommended_config,
        require_family,
        require_kind,
    )
    from edge.training.synthetic import (
        planted_dataset,
    )

# public name -> the module that defines it (imported on first use)
_EXPORTS: dict[str, str] = {
    "Exporter": "edge.training.export",
    "Learner": "edge.training.learner",
    "LearnerConfig": "edge.training.learner",
    "ListRanker": "edge.training.rankers",
    "ListRankerConfig": "edge.training.rankers",
    "ParityReport": "edge.training.export",
    "PartRanker": "edge.training.rankers",
    "PointRanker": "edge.training.rankers",
    "PointRankerConfig": "edge.training.rankers",
    "RANKER_KINDS": "edge.training.rankers",
    "RECOMMENDED_SIGNAL_PRIOR": "edge.training.rankers",
    "RECOMMENDED_VECTORS": "edge.training.rankers",
    "RankerConfig": "edge.training.rankers",
    "RankerModule": "edge.training.rankers",
    "Representation": "edge.training.rankers",
    "Step": "edge.training.rankers",
    "TrainConfig": "edge.training.loop",
    "TrainResult": "edge.training.loop",
    "VECTOR_PARTS": "edge.training.rankers",
    "VectorPart": "edge.training.rankers",
    "VectorRanker": "edge.training.rankers",
    "block_loss": "edge.training.loop",
    "build_ranker": "edge.training.rankers",
    "check_parity": "edge.training.export",
    "count_parameters": "edge.training.rankers",
    "evaluate_loss": "edge.training.loop",
    "export_onnx": "edge.training.export",
    "exporting": "edge.training.export",
    "finish_export": "edge.training.export",
    "from_checkpoint": "edge.training.rankers",
    "kinds_of": "edge.training.rankers",
    "listwise_kl": "edge.training.losses",
    "make_config": "edge.training.rankers",
    "mse": "edge.training.losses",
    "optimizer_step": "edge.training.loop",
    "pairwise_logistic": "edge.training.losses",
    "planted_dataset": "edge.training.synthetic",
    "pointwise_bce": "edge.training.losses",
    "ranker_metadata": "edge.training.export",
    "recommended_config": "edge.training.rankers",
    "require_family": "edge.training.rankers",
    "require_kind": "edge.training.rankers",
    "top1_accuracy": "edge.training.loop",
    "trace_onnx": "edge.training.export",
    "train": "edge.training.loop",
}

__all__ = [
    "RANKER_KINDS",
    "RECOMMENDED_SIGNAL_PRIOR",
    "RECOMMENDED_VECTORS",
    "VECTOR_PARTS",
    "Exporter",
    "Learner",
    "LearnerConfig",
    "ListRanker",
    "ListRankerConfig",
    "ParityReport",
    "PartRanker",
    "PointRanker",
    "PointRankerConfig",
    "RankerConfig",
    "RankerModule",
    "Representation",
    "Step",
    "TrainConfig",
    "TrainResult",
    "VectorPart",
    "VectorRanker",
    "block_loss",
    "build_ranker",
    "check_parity",
    "count_parameters",
    "evaluate_loss",
    "export_onnx",
    "exporting",
    "finish_export",
    "from_checkpoint",
    "kinds_of",
    "listwise_kl",
    "make_config",
    "mse",
    "optimizer_step",
    "pairwise_logistic",
    "planted_dataset",
    "pointwise_bce",
    "ranker_metadata",
    "recommended_config",
    "require_family",
    "require_kind",
    "top1_accuracy",
    "trace_onnx",
    "train",
]

# Names that moved to other rooms (the one report of every learner to edge.app;
# SWIFT and the checks to the rooms above this one): still reachable here for
# old code, with a DeprecationWarning (see CHANGELOG.md).
_MOVED: dict[str, str] = {
    "ConformanceReport": "edge.checks.ConformanceReport",
    "LearnReport": "edge.app.LearnReport",
    "SwiftConfig": "edge.swift.SwiftConfig",
    "SwiftRanker": "edge.swift.SwiftRanker",
    "VARIANTS": "edge.checks.VARIANTS",
    "check_ranker": "edge.checks.check_ranker",
    "planted_token_dataset": "edge.swift.planted_token_dataset",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, _MOVED)
