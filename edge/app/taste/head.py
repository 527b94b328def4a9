"""A user's taste head: per-part weights and a weight on the global score (numpy, no torch).

A candidate's representation has a few parts (``edge.runtime.parts``: the
last token's hidden state, the mean hidden state over the response, and the
on-device signals and lexicon of its text). A user's head adds one linear term
per part to whatever the global (or task) ranker of that name says, weighted by
the user's own ``1 + u``::

    score_k = (1 + u) * global_score_k + sum over parts p of  x_{k,p} . v_p

``u`` lets a user whose taste opposes the global ranker's turn it down (or
reverse it, below -1) in a few events; at ``u = 0`` the global score counts as
is. ``v_p`` lives in raw feature space: the fit works in standardised
coordinates and folds the standardisation into ``v`` before it gets here, so
the runtime needs no statistics, only the inputs it already feeds. With every
``v_p = 0`` the user ranks exactly like the global ranker: the cold start.

The head's weights are saved beside each version as a numpy archive (no
pickle), what the next update starts from; ``compose`` turns the head into the
ranker graph itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edge._errors import CorruptModelError, FeatureError
from edge.app.checkpoint import Checkpoint
from edge.runtime.lexicon import LEXICON_VERSION
from edge.runtime.parts import PARTS, Part
from edge.runtime.signals import SIGNAL_NAMES, SIGNALS_VERSION

__all__ = ["HEAD_FORMAT", "HEAD_KIND", "TasteHead"]

HEAD_KIND = "taste_head"  # Checkpoint.kind of a head's weights archive
# Version of the head archive's config: 1 had no ``global_weight`` (read as u = 0),
# 2 adds it, 3 the lexicon part and its ``lexicon_version``. An archive of a newer
# version is refused rather than misread.
HEAD_FORMAT = 3


@dataclass(frozen=True)
class TasteHead:
    """Per-part weight vectors in raw feature space (what the graph multiplies by),
    and the user's weight on the global ranker's score."""

    weights: dict[str, np.ndarray] = field(repr=False)  # part name -> (width,) float32
    signals_version: int = SIGNALS_VERSION  # version of the signals part's columns
    global_weight: float = 0.0  # u: the global score counts (1 + u) times
    lexicon_version: int = LEXICON_VERSION  # version of the lexicon part's columns

    def __post_init__(self) -> None:
        if "last" not in self.weights:
            raise FeatureError("a taste head needs the 'last' part")
        for part, vector in self.weights.items():
            if part not in PARTS or np.asarray(vector).ndim != 1:
                raise FeatureError(f"bad head part {part!r} of shape {np.shape(vector)}")
            spec, size = PARTS[part], len(vector)
            if spec.width is not None and size != spec.width:
                raise FeatureError(
                    f"head {part} part has {size} values, {part} version {spec.version} "
                    f"has {spec.width}"
                )
            if spec.width is None and size != self.feature_size:
                raise FeatureError(f"head {part!r} and 'last' parts differ in size")
        if not np.isfinite(self.global_weight):
            raise FeatureError(f"head global weight is {self.global_weight}")

    @property
    def global_scale(self) -> np.float32:
        """``1 + u`` as the graph multiplies the global score by (float32)."""
        return np.float32(1.0 + self.global_weight)

    @classmethod
    def zeros(
        cls, feature_size: int, parts: Sequence[Part] = ("last", "mean", "signals")
    ) -> TasteHead:
        """The cold-start head: ranks exactly like the global ranker (u = 0)."""
        return cls({p: np.zeros(PARTS[p].size(feature_size), np.float32) for p in parts})

    @property
    def parts(self) -> tuple[Part, ...]:
        """The parts the head weighs, in input order."""
        return tuple(p for p in PARTS if p in self.weights)

    def version_of(self, part: Part) -> int:
        """The version of a part's columns the head's weights were fitted on."""
        versions = {"signals": self.signals_version, "lexicon": self.lexicon_version}
        return versions.get(part, PARTS[part].version)

    @property
    def feature_size(self) -> int:
        return len(self.weights["last"])

    @property
    def nbytes(self) -> int:
        """Bytes of the weight vectors: the per-user state that is not the global graph
        (besides the one number u)."""
        return sum(int(np.asarray(v, np.float32).nbytes) for v in self.weights.values())

    def score(
        self,
        candidates: np.ndarray,
        mean_candidates: np.ndarray | None = None,
        signals: np.ndarray | None = None,
        global_scores: np.ndarray | None = None,
        *,
        lexicon: np.ndarray | None = None,
    ) -> np.ndarray:
        """The user's score, (..., K) from (..., K, width) parts (numpy), as the composed
        graph computes it: ``(1 + u) * global_scores`` plus the head's terms. Without
        ``global_scores`` (no global ranker) the head's terms alone."""
        given = {"last": candidates, "mean": mean_candidates, "signals": signals,
                 "lexicon": lexicon}  # fmt: skip
        total = np.zeros(np.shape(candidates)[:-1], np.float32)
        if global_scores is not None:
            total += self.global_scale * np.asarray(global_scores, np.float32)
        for part in self.parts:
            x = given[part]
            if x is None:
                raise FeatureError(f"head part {part!r} needs input {PARTS[part].input!r}")
            total += np.asarray(x, np.float32) @ self.weights[part]
        return total

    # -- the weights archive (no pickle) ----------------------------------------------
    def to_checkpoint(self) -> Checkpoint:
        config = {
            "feature_size": self.feature_size,
            "blocks": list(self.parts),  # the archive's name for the parts
            "signals_version": self.signals_version,
            "signal_names": list(SIGNAL_NAMES),
            "lexicon_version": self.lexicon_version,
            "head_format": HEAD_FORMAT,
            "global_weight": float(self.global_weight),
        }
        weights: dict[str, np.ndarray] = {
            p: np.asarray(v, np.float32) for p, v in self.weights.items()
        }
        return Checkpoint(kind=HEAD_KIND, config=config, weights=weights)

    def to_bytes(self) -> bytes:
        return self.to_checkpoint().to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "taste head") -> TasteHead:
        """Parse ``to_bytes`` output; anything else raises CorruptModelError.

        A head saved before u existed (format 1) loads with u = 0: it ranks as it
        did; one saved before the lexicon part (format 2) has none."""
        ckpt = Checkpoint.from_bytes(data, source)
        if ckpt.kind != HEAD_KIND:
            raise CorruptModelError(f"{source} holds a {ckpt.kind!r} ranker, not a taste head")
        fmt = ckpt.config.get("head_format", 1)
        if not isinstance(fmt, int) or not 1 <= fmt <= HEAD_FORMAT:
            raise CorruptModelError(f"{source} is a taste head of format {fmt!r}, this "
                                    f"version reads 1 to {HEAD_FORMAT}")  # fmt: skip
        try:
            weights: dict[str, np.ndarray] = {
                p: np.asarray(ckpt.weights[p], np.float32)
                for p in PARTS
                if p in ckpt.config["blocks"]
            }
            u = float(ckpt.config.get("global_weight", 0.0))
            lexicon = int(ckpt.config.get("lexicon_version", LEXICON_VERSION))
            return cls(weights, int(ckpt.config["signals_version"]), u, lexicon)
        except (KeyError, TypeError, ValueError, FeatureError) as exc:
            raise CorruptModelError(f"{source} is not a valid taste head: {exc}") from exc
