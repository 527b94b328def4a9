"""Names shared by the exporter and the runtime: graph I/O and metadata keys.

Kept in a tiny torch-free module so the runtime can validate a model against the
same constants the exporter wrote, without importing the exporter.

A ranker describes itself in two places any ONNX runtime can read: metadata
(``language_ranker.*``: its kind, feature size, the parts of a candidate it
reads, the on-device parts' versions and, when the exporter was told, the source model's
name, weights checksum and layer) and a doc string on each graph input (its
name, float32 dtype, shape, what it holds and that fp16 wire features must be
widened). ``identity_metadata`` and ``read_identity`` convert a
`FeatureIdentity` to and from those entries; ``input_doc`` writes the doc string.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from edge.runtime.types import FeatureIdentity

__all__ = [
    "FORMAT_VERSION",
    "INPUT_CANDIDATES",
    "INPUT_DESCRIPTIONS",
    "INPUT_INSTRUCTION",
    "INPUT_LEXICON",
    "INPUT_MASK",
    "INPUT_MEAN_CANDIDATES",
    "INPUT_SIGNALS",
    "INPUT_TOKENS",
    "META_CONFIG",
    "META_FEATURE_SIZE",
    "META_FORMAT",
    "META_INPUTS",
    "META_KIND",
    "META_LAYER",
    "META_LEXICON_VERSION",
    "META_PREFIX",
    "META_RELEVANCE",
    "META_REPRESENTATION",
    "META_SIGNALS_VERSION",
    "META_SIGNAL_NAMES",
    "META_SOURCE_FORMAT",
    "META_SOURCE_MODEL",
    "META_SOURCE_SHA256",
    "OUTPUT_SCORES",
    "identity_metadata",
    "input_doc",
    "read_identity",
]

INPUT_INSTRUCTION = "instruction"  # (B, d) float32
INPUT_CANDIDATES = "candidates"  # (B, K, d) float32
OUTPUT_SCORES = "scores"  # (B, K) float32
INPUT_TOKENS = "tokens"  # (B, K, T, d) float32, per-token features (SWIFT graphs)
INPUT_MASK = "mask"  # (B, K, T) float32, 1 for a real token, 0 for padding (SWIFT graphs)
# Representation v2, optional inputs a graph may declare:
INPUT_MEAN_CANDIDATES = "mean_candidates"  # (B, K, d) float32, mean over response tokens
INPUT_SIGNALS = "signals"  # (B, K, S) float32, edge.runtime.signals of each candidate
INPUT_LEXICON = "lexicon"  # (B, K, C) float32, edge.runtime.lexicon of each candidate's text

META_PREFIX = "language_ranker."
META_FORMAT = META_PREFIX + "format_version"  # "1"
META_KIND = META_PREFIX + "kind"  # "list" | "point" | "swift"
META_FEATURE_SIZE = META_PREFIX + "feature_size"  # d as a decimal string
META_RELEVANCE = META_PREFIX + "relevance"  # "cosine" | "linear"
META_CONFIG = META_PREFIX + "config"  # the ranker config as JSON
META_SIGNALS_VERSION = META_PREFIX + "signals_version"  # SIGNALS_VERSION the graph reads
META_SIGNAL_NAMES = META_PREFIX + "signal_names"  # JSON list, the signals input's columns
META_LEXICON_VERSION = META_PREFIX + "lexicon_version"  # LEXICON_VERSION the graph reads
META_REPRESENTATION = META_PREFIX + "representation"  # JSON list of input blocks, e.g.
# ["last", "mean", "signals"]: which parts of a candidate the graph reads
# The feature identity (see FeatureIdentity), each entry only when known:
META_SOURCE_MODEL = META_PREFIX + "source_model"  # central's Info.model_name
META_SOURCE_SHA256 = META_PREFIX + "source_model_sha256"  # first 16 hex of the weights' sha256
META_LAYER = META_PREFIX + "layer_index"  # hidden-state index as a decimal string
META_SOURCE_FORMAT = META_PREFIX + "source_weights_format"  # central's Info.weights_format
# JSON list of {"name", "dtype", "shape"} per graph input, shape entries a size or an axis
# name ("batch", "k", "t"): the input doc strings' facts, for runtimes that cannot read those
META_INPUTS = META_PREFIX + "inputs"
FORMAT_VERSION = "1"

# What each input holds, for its doc string.
INPUT_DESCRIPTIONS: dict[str, str] = {
    INPUT_INSTRUCTION: "the hidden state of the prompt's last token",
    INPUT_CANDIDATES: "each candidate's hidden state at its last token",
    INPUT_MEAN_CANDIDATES: "each candidate's hidden state averaged over its response tokens",
    INPUT_SIGNALS: "each candidate's on-device signals (edge.runtime.signals), columns as in "
    f"{META_SIGNAL_NAMES}",
    INPUT_LEXICON: "each candidate's word-category counts, log(1 + count), computed on the "
    f"device (edge.runtime.lexicon, version in {META_LEXICON_VERSION})",
    INPUT_TOKENS: "each candidate's per-token features (SWIFT), zero-padded to the longest",
    INPUT_MASK: "1 for a real token of a candidate, 0 for padding",
}
_FROM_CENTRAL = (INPUT_INSTRUCTION, INPUT_CANDIDATES, INPUT_MEAN_CANDIDATES, INPUT_TOKENS)
_WIDEN = "central sends features as fp16 by default: widen them to float32 before feeding"


def identity_metadata(identity: FeatureIdentity | None) -> dict[str, str]:
    """The metadata entries of `identity`'s model and layer (only those known).

    The parts a ranker reads and their signals version are the ranker's own
    entries (``META_REPRESENTATION``, ``META_SIGNALS_VERSION``), written from
    its config, so they are not taken from the identity.
    """
    if identity is None:
        return {}
    entries = {
        META_SOURCE_MODEL: identity.model_name,
        META_SOURCE_SHA256: identity.model_sha256,
        META_LAYER: "" if identity.layer_index is None else str(identity.layer_index),
        META_SOURCE_FORMAT: identity.weights_format,
    }
    return {key: value for key, value in entries.items() if value}


def read_identity(metadata: Mapping[str, str]) -> FeatureIdentity | None:
    """The identity a graph's metadata records; None when it records no model checksum
    and no layer (a ranker exported without one: nothing to check)."""
    layer = metadata.get(META_LAYER, "")
    identity = FeatureIdentity(
        model_name=metadata.get(META_SOURCE_MODEL, ""),
        model_sha256=metadata.get(META_SOURCE_SHA256, ""),
        layer_index=int(layer) if layer.lstrip("-").isdigit() else None,
        weights_format=metadata.get(META_SOURCE_FORMAT, ""),
        parts=_parts(metadata.get(META_REPRESENTATION, "")),
        signals_version=_int_or_none(metadata.get(META_SIGNALS_VERSION, "")),
    )
    return identity if identity.known else None


def input_doc(name: str, shape: Sequence[str | int], identity: FeatureIdentity | None) -> str:
    """The doc string of input `name` of shape `shape` in a graph trained on `identity`.

    E.g. ``candidates: float32 [batch, k, 576]; each candidate's hidden state at
    its last token, from SmolLM2-135M-Instruct (sha 1a2b3c4d5e6f7a8b) layer 18;
    central sends features as fp16 by default: widen them to float32 before feeding``.
    """
    dims = ", ".join(str(d) for d in shape)
    text = f"{name}: float32 [{dims}]; {INPUT_DESCRIPTIONS.get(name, 'an input of the ranker')}"
    if name in _FROM_CENTRAL:
        if identity is not None and identity.known:
            text += f", from {identity.describe()}"
        text += f"; {_WIDEN}"
    return text


def _parts(value: str) -> tuple[str, ...]:
    try:
        parts = json.loads(value) if value else []
    except ValueError:
        return ()
    return tuple(str(p) for p in parts) if isinstance(parts, list) else ()


def _int_or_none(value: str) -> int | None:
    return int(value) if value.isdigit() else None
