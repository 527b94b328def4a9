"""Old home of the taste learner's fit, kept so that old imports keep working.

Everything here moved into the taste room, ``edge.app.taste`` (``TasteConfig``,
``TasteFit``, ``Reaction``, ``Pairs``, ``preference_pairs``), and ``FitReport``
to ``edge.app.learning``; import them from there. This module only re-exports
them, warns once, and will be removed.
"""

from __future__ import annotations

import warnings

from edge.app.learning import FitReport as FitReport
from edge.app.taste.config import TasteConfig as TasteConfig
from edge.app.taste.fit import TasteFit as TasteFit
from edge.app.taste.pairs import Pairs as Pairs
from edge.app.taste.pairs import Reaction as Reaction
from edge.app.taste.pairs import preference_pairs as preference_pairs

__all__: list[str] = []  # nothing of its own: only the old names, re-exported

warnings.warn(
    "edge.app.taste_fit moved into edge.app.taste (FitReport: edge.app.learning)",
    DeprecationWarning,
    stacklevel=2,
)
