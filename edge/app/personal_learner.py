"""Old home of the torch-free learner, kept so that old imports keep working.

``PersonalLearner`` is ``edge.app.taste.TasteLearner`` now, and its report
``UpdateReport`` is the one report of every learner, ``edge.app.learning.LearnReport``
(whose ``version`` is the version number; ``saved`` is the registry record).
Import them from there. This module only re-exports them, warns once, and will
be removed.
"""

from __future__ import annotations

import warnings

from edge.app.learning import IDENTITY_KEY as IDENTITY_KEY
from edge.app.learning import LearnReport
from edge.app.taste.learner import LEARNER_NAME as LEARNER_NAME
from edge.app.taste.learner import TasteLearner

__all__: list[str] = []  # nothing of its own: only the old names, re-exported

PersonalLearner = TasteLearner
UpdateReport = LearnReport

warnings.warn(
    "edge.app.personal_learner moved: PersonalLearner is edge.app.taste.TasteLearner, "
    "UpdateReport is edge.app.learning.LearnReport",
    DeprecationWarning,
    stacklevel=2,
)
