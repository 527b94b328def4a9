"""The parts of a candidate a ranker can read: one registry entry per part (no torch).

A candidate's representation is a few named *parts*, each fed to a ranker graph
as an input of its own so that a handful of numbers is not drowned among
thousands of hidden dimensions:

=========  =================  ===========  ========  ==================================
part       graph input        width        source    what it holds
=========  =================  ===========  ========  ==================================
last       ``candidates``     d            central   the hidden state at the last token
mean       ``mean_candidates`` d           central   the hidden state averaged over the
                                                     response's tokens
signals    ``signals``        S (23)       device    ``edge.runtime.signals`` of the text
                                                     and the scalars, versioned
lexicon    ``lexicon``        C (211)      device    ``edge.runtime.lexicon``: word-category
                                                     counts of the text, versioned
=========  =================  ===========  ========  ==================================

``PARTS`` is that table, in input order; every room reads it rather than
spelling the parts out: which graph input carries a part, its width, whether
central sends it or the device computes it, and the version a ranker records
for it. A new part (say a block computed on device from the answer's text) is
one more entry here plus its name in ``Part``; then the taste learner fits it
as a block of its own, and the store and the scorer need only know how to
compute or keep it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from edge.runtime.lexicon import LEXICON_VERSION, LEXICON_WIDTH
from edge.runtime.onnx_meta import (
    INPUT_CANDIDATES,
    INPUT_LEXICON,
    INPUT_MEAN_CANDIDATES,
    INPUT_SIGNALS,
    META_LEXICON_VERSION,
    META_SIGNALS_VERSION,
)
from edge.runtime.signals import SIGNAL_NAMES, SIGNALS_VERSION

__all__ = [
    "DEVICE_PARTS",
    "PARTS",
    "VECTOR_PARTS",
    "DevicePart",
    "Part",
    "PartSpec",
    "VectorPart",
    "part_layout",
]

Part = Literal["last", "mean", "signals", "lexicon"]  # a part of a candidate, by name
DevicePart = Literal["signals", "lexicon"]  # the parts the device computes from the text
VectorPart = Literal["last", "mean"]  # the hidden-state parts (central sends them)


@dataclass(frozen=True)
class PartSpec:
    """One part of a candidate's representation, as every room reads it."""

    name: Part  # what rankers, configs and metadata call it
    input: str  # the graph input that carries it, (B, K, width) float32
    source: Literal["central", "device"]  # sent by central, or computed on the device
    width: int | None  # values per candidate; None: the feature size d of the model
    version: int  # bumped whenever the part is computed another way
    provide: str  # how a caller provides it (for the message when it is missing)
    # the metadata entry recording which version of a device part a graph reads (None:
    # a vector from central, whose identity the feature identity checks)
    version_key: str | None = None

    def size(self, feature_size: int) -> int:
        """Values per candidate for features of ``feature_size`` values."""
        return feature_size if self.width is None else self.width


PARTS: dict[Part, PartSpec] = {
    "last": PartSpec(
        "last", INPUT_CANDIDATES, "central", None, 1, "Candidate.feature (always sent)"
    ),
    "mean": PartSpec(
        "mean",
        INPUT_MEAN_CANDIDATES,
        "central",
        None,
        1,
        "the mean over each response's tokens (Candidate.mean_feature; ask central for "
        "mean features)",
    ),
    "signals": PartSpec(
        "signals",
        INPUT_SIGNALS,
        "device",
        len(SIGNAL_NAMES),
        SIGNALS_VERSION,
        "the on-device signals (edge.runtime.signals.candidate_signals)",
        META_SIGNALS_VERSION,
    ),
    "lexicon": PartSpec(
        "lexicon",
        INPUT_LEXICON,
        "device",
        LEXICON_WIDTH,
        LEXICON_VERSION,
        "the on-device lexicon block (edge.runtime.lexicon.candidate_lexicon)",
        META_LEXICON_VERSION,
    ),
}
VECTOR_PARTS: tuple[VectorPart, ...] = ("last", "mean")  # in input order
DEVICE_PARTS: tuple[DevicePart, ...] = ("signals", "lexicon")  # in input order


def part_layout(feature_size: int, parts: Iterable[str]) -> dict[str, int]:
    """The block layout of ``parts`` for features of ``feature_size`` values: each part's
    width, in input order (what ``edge.app.taste.TasteFit`` takes). An unknown name
    raises ValueError."""
    wanted = set(parts)
    unknown = wanted - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; the parts are {list(PARTS)}")
    return {name: spec.size(feature_size) for name, spec in PARTS.items() if name in wanted}
