"""Names shared by the exporter and the runtime: graph I/O and metadata keys.

Kept in a tiny torch-free module so the runtime can validate a model against the
same constants the exporter wrote, without importing the exporter.
"""

from __future__ import annotations

__all__ = [
    "FORMAT_VERSION",
    "INPUT_CANDIDATES",
    "INPUT_INSTRUCTION",
    "INPUT_MASK",
    "INPUT_MEAN_CANDIDATES",
    "INPUT_SIGNALS",
    "INPUT_TOKENS",
    "META_CONFIG",
    "META_FEATURE_SIZE",
    "META_FORMAT",
    "META_KIND",
    "META_PREFIX",
    "META_RELEVANCE",
    "META_REPRESENTATION",
    "META_SIGNALS_VERSION",
    "META_SIGNAL_NAMES",
    "OUTPUT_SCORES",
]

INPUT_INSTRUCTION = "instruction"  # (B, d) float32
INPUT_CANDIDATES = "candidates"  # (B, K, d) float32
OUTPUT_SCORES = "scores"  # (B, K) float32
INPUT_TOKENS = "tokens"  # (B, K, T, d) float32, per-token features (SWIFT graphs)
INPUT_MASK = "mask"  # (B, K, T) float32, 1 for a real token, 0 for padding (SWIFT graphs)
# Representation v2, optional inputs a graph may declare:
INPUT_MEAN_CANDIDATES = "mean_candidates"  # (B, K, d) float32, mean over response tokens
INPUT_SIGNALS = "signals"  # (B, K, S) float32, edge.runtime.signals of each candidate

META_PREFIX = "language_ranker."
META_FORMAT = META_PREFIX + "format_version"  # "1"
META_KIND = META_PREFIX + "kind"  # "list" | "point" | "swift"
META_FEATURE_SIZE = META_PREFIX + "feature_size"  # d as a decimal string
META_RELEVANCE = META_PREFIX + "relevance"  # "cosine" | "linear"
META_CONFIG = META_PREFIX + "config"  # the ranker config as JSON
META_SIGNALS_VERSION = META_PREFIX + "signals_version"  # SIGNALS_VERSION the graph reads
META_SIGNAL_NAMES = META_PREFIX + "signal_names"  # JSON list, the signals input's columns
META_REPRESENTATION = META_PREFIX + "representation"  # JSON list of input blocks, e.g.
# ["last", "mean", "signals"]: which parts of a candidate the graph reads
FORMAT_VERSION = "1"
