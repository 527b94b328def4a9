"""Tiny rankers over LLM hidden states (torch): ListRanker, PointRanker and SWIFT.

``build_ranker`` makes a seeded ranker from a kind and config; ``from_checkpoint``
rebuilds one from weights stored by the registry.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from edge.app.checkpoint import Checkpoint
from edge.swift.head import SwiftConfig, SwiftRanker
from edge.training.rankers._base import RankerModule, count_parameters
from edge.training.rankers.list import ListRanker, ListRankerConfig
from edge.training.rankers.point import PointRanker, PointRankerConfig

__all__ = [
    "RANKER_KINDS",
    "ListRanker",
    "ListRankerConfig",
    "PointRanker",
    "PointRankerConfig",
    "RankerConfig",
    "RankerModule",
    "SwiftConfig",
    "SwiftRanker",
    "build_ranker",
    "count_parameters",
    "from_checkpoint",
    "make_config",
]

RankerConfig = ListRankerConfig | PointRankerConfig | SwiftConfig

RANKER_KINDS: dict[str, tuple[type[RankerModule], type[Any]]] = {
    "list": (ListRanker, ListRankerConfig),
    "point": (PointRanker, PointRankerConfig),
    "swift": (SwiftRanker, SwiftConfig),  # per-token features: see edge.swift.train
}


def make_config(kind: str, feature_size: int, **overrides: Any) -> RankerConfig:
    """Default config of ``kind`` for features of ``feature_size`` values."""
    if kind not in RANKER_KINDS:
        raise ValueError(f"unknown ranker kind {kind!r}, expected one of {sorted(RANKER_KINDS)}")
    return RANKER_KINDS[kind][1](feature_size=feature_size, **overrides)


def build_ranker(config: RankerConfig, seed: int = 0) -> RankerModule:
    """A freshly initialised ranker; the same seed always gives the same weights.

    The global torch RNG is forked so building a ranker never perturbs the caller's
    random stream.
    """
    for cls, cfg_cls in RANKER_KINDS.values():
        if isinstance(config, cfg_cls):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return cls(config)
    raise TypeError(f"not a ranker config: {type(config).__name__}")


def from_checkpoint(ckpt: Checkpoint) -> RankerModule:
    """Rebuild a torch ranker (kind, config and weights) from a numpy checkpoint."""
    if ckpt.kind not in RANKER_KINDS:
        raise ValueError(f"checkpoint has unknown ranker kind {ckpt.kind!r}")
    cfg_cls = RANKER_KINDS[ckpt.kind][1]
    names = {f.name for f in dataclasses.fields(cfg_cls)}
    config = cfg_cls(**{k: v for k, v in ckpt.config.items() if k in names})
    module = build_ranker(config)
    module.load_checkpoint(ckpt)
    return module
