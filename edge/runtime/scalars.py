"""The model's numbers per candidate, as columns: one type for the store, signals and datasets.

Central sends four scalars with every candidate besides its vectors: the
generated token count, the cumulative log-probability at temperature 1, the
mean next-token entropy (on request) and why generation stopped. The on-device
signals read them (``edge.runtime.signals``), the feedback store keeps them
with each shown set so signals of a later version can be recomputed, and the
datasets built from feedback read them back from there. ``Scalars`` holds them
for the K candidates of one set, column by column, in one normalised form:

- a column is None when it is unknown altogether (a set recorded before the
  scalars existed), and an entry is None when that candidate's value is
  unknown (a server that sent no entropy);
- token counts are non-negative ints, the log-probability and entropy finite
  floats (anything else reads as unknown), finish reasons ``"eos"`` or
  ``"length"`` as central says.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from edge.runtime.types import Candidate

__all__ = ["SCALAR_COLUMNS", "Scalars"]

# The columns, in order, with their names in the store's JSON.
SCALAR_COLUMNS: tuple[str, ...] = (
    "num_tokens",
    "cumulative_logprobs",
    "mean_entropies",
    "finish_reasons",
)
_JSON_KEYS = ("num_tokens", "cumulative_logprob", "mean_entropy", "finish_reason")


def _number(value: object) -> float | None:
    """A finite real number, or None for anything else (None, NaN, a bool, a string)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _count(value: object) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number >= 0 else None


def _reason(value: object) -> str | None:
    return None if value is None else str(value)


_T = TypeVar("_T")


def _column(
    values: Iterable[object] | None, clean: Callable[[object], _T]
) -> tuple[_T, ...] | None:
    return None if values is None else tuple(clean(v) for v in values)


@dataclass(frozen=True)
class Scalars:
    """The K candidates' scalars, a column each (None: the whole column is unknown)."""

    # Any sequences in; kept as tuples (see the module docstring).
    num_tokens: Sequence[int | None] | None = None  # generated tokens, end-of-sequence excluded
    cumulative_logprobs: Sequence[float | None] | None = None  # sum of token log-probs
    mean_entropies: Sequence[float | None] | None = None  # mean next-token entropy, nats
    finish_reasons: Sequence[str | None] | None = None  # "eos" or "length"

    def __post_init__(self) -> None:
        # Any sequence in, one normalised form kept (see the module docstring).
        cleaners = (_count, _number, _number, _reason)
        for name, clean in zip(SCALAR_COLUMNS, cleaners, strict=True):
            object.__setattr__(self, name, _column(getattr(self, name), clean))

    @classmethod
    def of(cls, candidates: Sequence[Candidate]) -> Scalars:
        """The scalars of candidates as they come from central."""
        return cls(
            num_tokens=tuple(c.num_tokens for c in candidates),
            cumulative_logprobs=tuple(c.cumulative_logprob for c in candidates),
            mean_entropies=tuple(c.mean_entropy for c in candidates),
            finish_reasons=tuple(c.finish_reason for c in candidates),
        )

    def columns(self) -> dict[str, Sequence[object] | None]:
        """Each column by name, in ``SCALAR_COLUMNS`` order."""
        return {name: getattr(self, name) for name in SCALAR_COLUMNS}

    @property
    def known(self) -> bool:
        """Whether any column is known."""
        return any(values is not None for values in self.columns().values())

    # -- the store's form ---------------------------------------------------------------
    def to_json(self) -> str | None:
        """One JSON object of the known columns (None when none is known)."""
        given = {
            key: list(values)
            for key, values in zip(_JSON_KEYS, self.columns().values(), strict=True)
            if values is not None
        }
        return json.dumps(given) if given else None

    @classmethod
    def from_json(cls, text: str | None) -> Scalars:
        """``to_json``'s output back (no columns for None); ValueError when it is not
        an object of columns."""
        data = json.loads(text) if text is not None else {}
        if not isinstance(data, dict):
            raise ValueError(f"scalars are not a JSON object: {text!r}")
        return cls(*(data.get(key) for key in _JSON_KEYS))
