"""The taste learner: each user's taste as a small linear head, fitted with numpy per event.

The room, one concern per file, each usable and testable alone:

- ``pairs``: feedback (thumbs, picks, scores) as weighted preference pairs
  within a shown set, and the Bradley-Terry loss on them;
- ``rows``: one user's candidates as rows of their parts, stored as
  deviations from their set's mean, and the standardisation of the columns;
- ``basis``: the low-rank basis a wide part (a 4096-d hidden state) is fitted
  in, shipped with the global ranker (``basis.population_basis`` and
  ``basis.attach_basis``, for whoever publishes it) or else a seeded random one;
- ``heads``: several heads over the same rows, each trusting the parts
  differently, and their Hedge mix on prequential evidence;
- ``optimiser``: sequential subspace steps (SESOP) with a kept gradient (SAGA),
  and the exact Newton solve inside the span;
- ``fit``: ``TasteFit``, one user's rows, pairs and heads, updated in place;
- ``head``: ``TasteHead``, the mixed head's weights and its archive on disk;
- ``compose``: ``compose_ranker``, the global graph plus the head as one ONNX file;
- ``config``: ``TasteConfig``, which builds the learner;
- ``learner``: ``TasteLearner``, store -> fit -> compose -> registry, under the
  registry's lock (the ``edge.app.learning.UserLearner`` of ``PersonalRanker``).

The model, the objective, the derivations and the study figures behind each
default are in ``docs/taste-learner.md``. A new part of the candidate
(``edge.runtime.parts``) becomes one more group of columns in ``rows`` and one
more input of the composed graph without a change here, and is fitted in a
basis when it is wider than ``TasteConfig.reduce_above``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge._lazy import lazy_exports

if TYPE_CHECKING:
    from edge.app.taste.compose import compose_ranker, graph_parts
    from edge.app.taste.config import TasteConfig
    from edge.app.taste.fit import TasteFit
    from edge.app.taste.head import TasteHead
    from edge.app.taste.learner import TasteLearner
    from edge.app.taste.pairs import Pairs, Reaction, preference_pairs

# public name -> the module that defines it (imported on first use)
_EXPORTS: dict[str, str] = {
    "Pairs": "edge.app.taste.pairs",
    "Reaction": "edge.app.taste.pairs",
    "TasteConfig": "edge.app.taste.config",
    "TasteFit": "edge.app.taste.fit",
    "TasteHead": "edge.app.taste.head",
    "TasteLearner": "edge.app.taste.learner",
    "compose_ranker": "edge.app.taste.compose",
    "graph_parts": "edge.app.taste.compose",
    "preference_pairs": "edge.app.taste.pairs",
}

__all__ = [
    "Pairs",
    "Reaction",
    "TasteConfig",
    "TasteFit",
    "TasteHead",
    "TasteLearner",
    "compose_ranker",
    "graph_parts",
    "preference_pairs",
]

# Names of the module this room replaced (edge.app.taste was one file): still
# reachable for old code, with a DeprecationWarning (see CHANGELOG.md).
_MOVED: dict[str, str] = {
    "Block": "edge.runtime.Part",
    "graph_blocks": "edge.app.taste.graph_parts",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, _MOVED)
