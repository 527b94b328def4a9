"""Checks that sit above the rooms they check (torch: the ``train`` extra).

- ``conformance``: ``check_ranker(kind)`` takes one entry of
  ``edge.training.RANKER_KINDS`` through a ranker's whole life (build, train,
  export, parity, rank, checkpoint, registry, refusals), whichever input
  family it belongs to: list and point rankers (``edge.training``) and SWIFT
  (``edge.swift``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge._errors import require_extra
from edge._lazy import lazy_exports

# The checks train and export rankers: say which extra provides torch, once, here.
require_extra("torch", extra="train", what="edge.checks")

if TYPE_CHECKING:
    from edge.checks.conformance import (
        VARIANTS,
        ConformanceReport,
        check_ranker,
    )

# public name -> the module that defines it (imported on first use)
_EXPORTS: dict[str, str] = {
    "ConformanceReport": "edge.checks.conformance",
    "VARIANTS": "edge.checks.conformance",
    "check_ranker": "edge.checks.conformance",
}

__all__ = [
    "VARIANTS",
    "ConformanceReport",
    "check_ranker",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
