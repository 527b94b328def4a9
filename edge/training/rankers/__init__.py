"""Tiny rankers over LLM hidden states (torch): ListRanker, PointRanker, and the kinds table.

``RANKER_KINDS`` is the one table of kinds: adding a kind is adding its entry
(and the conformance check, ``edge.checks.check_ranker``, then covers it). A
kind defined in a room above this one adds its entry when its module is
imported; the table names that module (``_LAZY_KINDS``), so looking the kind up
imports it. SWIFT's head (``edge.swift``, above ``edge.training``) is such a
kind: this room never imports it.

List and point rankers read one or more parts of a candidate (``Representation``:
the last-token vector, the mean vector, the signals block), each a named input.
``build_ranker`` makes a seeded ranker from a kind and config; ``from_checkpoint``
rebuilds one from weights stored by the registry. ``require_family`` and
``require_kind`` are how a function of one input family refuses the others.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterator, MutableMapping
from typing import Any, Protocol, TypeVar

import torch

from edge._errors import ConfigError, ExportError, RankerError, TrainingError
from edge.app.checkpoint import Checkpoint
from edge.runtime.signals import SIGNAL_NAMES, SIGNALS_VERSION
from edge.training._contract import RankerModule, Step, VectorRanker, count_parameters
from edge.training.rankers._parts import VECTOR_PARTS, PartRanker, Representation, VectorPart
from edge.training.rankers.list import ListRanker, ListRankerConfig
from edge.training.rankers.point import PointRanker, PointRankerConfig

__all__ = [
    "RANKER_KINDS",
    "RECOMMENDED_SIGNAL_PRIOR",
    "RECOMMENDED_VECTORS",
    "VECTOR_PARTS",
    "ListRanker",
    "ListRankerConfig",
    "PartRanker",
    "PointRanker",
    "PointRankerConfig",
    "RankerConfig",
    "RankerModule",
    "Representation",
    "Step",
    "VectorPart",
    "VectorRanker",
    "build_ranker",
    "count_parameters",
    "from_checkpoint",
    "kinds_of",
    "make_config",
    "recommended_config",
    "require_family",
    "require_kind",
]

Family = TypeVar("Family", bound=RankerModule)


class RankerConfig(Protocol):
    """What every kind's config has (a dataclass per kind: ``ListRankerConfig``, ...)."""

    @property
    def feature_size(self) -> int: ...


# Kinds defined in rooms above this one: kind -> the module that adds its entry on import.
_LAZY_KINDS: dict[str, str] = {"swift": "edge.swift.head"}


class _KindTable(MutableMapping[str, tuple[type[RankerModule], type[Any]]]):
    """kind -> (module class, config class), complete: a lazy kind is imported on lookup."""

    def __init__(self, kinds: dict[str, tuple[type[RankerModule], type[Any]]]) -> None:
        self._kinds = kinds

    def _load(self, kind: str | None = None) -> None:
        for name, module in _LAZY_KINDS.items():
            if name not in self._kinds and kind in (None, name):
                importlib.import_module(module)  # adds the kind's entry

    def __getitem__(self, kind: str) -> tuple[type[RankerModule], type[Any]]:
        self._load(kind)
        return self._kinds[kind]

    def __setitem__(self, kind: str, entry: tuple[type[RankerModule], type[Any]]) -> None:
        self._kinds[kind] = entry

    def __delitem__(self, kind: str) -> None:
        del self._kinds[kind]

    def __contains__(self, kind: object) -> bool:
        return kind in self._kinds or kind in _LAZY_KINDS

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(self._kinds)

    def __len__(self) -> int:
        self._load()
        return len(self._kinds)


# kind -> (module class, config class); the module's base says its input family.
RANKER_KINDS: MutableMapping[str, tuple[type[RankerModule], type[Any]]] = _KindTable(
    {
        "list": (ListRanker, ListRankerConfig),
        "point": (PointRanker, PointRankerConfig),
        # "swift": (SwiftRanker, SwiftConfig), per-token features: added by edge.swift.head
    }
)

# The error each step raises when it refuses a kind.
_STEP_ERRORS: dict[Step, type[RankerError]] = {
    "train": TrainingError,
    "export": ExportError,
    "parity": ExportError,
}


def kinds_of(family: type[RankerModule]) -> list[str]:
    """The registered kinds whose module belongs to ``family``, in table order."""
    return [kind for kind, (cls, _) in RANKER_KINDS.items() if issubclass(cls, family)]


def _refusal(
    kind: str, module: type[RankerModule], family: type[RankerModule], step: Step, caller: str
) -> RankerError:
    takes = " or ".join(repr(k) for k in kinds_of(family)) or family.__name__
    serves = module.entry_points.get(step)
    instead = f"; {kind!r} needs {serves}" if serves else f", not {kind!r}"
    return _STEP_ERRORS[step](f"{caller} takes {takes} rankers{instead}")


def require_family(model: RankerModule, family: type[Family], step: Step, caller: str) -> Family:
    """``model`` itself when it belongs to ``family``; else the step's error naming its kind.

    Called first thing by every function that feeds a ranker its family's
    tensors, so a ranker of another family is refused with, e.g.,
    ``TrainingError: train() takes 'list' or 'point' rankers; 'swift' needs
    edge.swift.train_swift()`` instead of failing deep inside ``forward``.
    """
    if isinstance(model, family):
        return model
    raise _refusal(model.kind, type(model), family, step, caller)


def require_kind(kind: str, family: type[RankerModule], step: Step, caller: str) -> None:
    """Like ``require_family`` for a kind named in a config, before any ranker is built."""
    if kind not in RANKER_KINDS:
        raise ConfigError(f"unknown ranker kind {kind!r}, expected one of {sorted(RANKER_KINDS)}")
    module = RANKER_KINDS[kind][0]
    if not issubclass(module, family):
        raise _refusal(kind, module, family, step, caller)


def make_config(
    kind: str, feature_size: int, *, signals: bool = False, **overrides: Any
) -> RankerConfig:
    """Default config of ``kind`` for features of ``feature_size`` values.

    ``signals=True`` makes a list or point ranker read the current on-device
    signals block (``edge.runtime.signals``: its names and version go into the
    config); ``overrides`` set any other field, e.g. ``vectors=("last", "mean")``
    or ``signal_prior={"mean_logprob": 1.0}``.
    """
    if kind not in RANKER_KINDS:
        raise ConfigError(f"unknown ranker kind {kind!r}, expected one of {sorted(RANKER_KINDS)}")
    cfg_cls = RANKER_KINDS[kind][1]
    if signals:
        if not issubclass(cfg_cls, Representation):
            raise ConfigError(f"{kind!r} rankers do not read the signals part")
        overrides = {
            "signal_names": SIGNAL_NAMES,
            "signals_version": SIGNALS_VERSION,
            **overrides,
        }
    config: RankerConfig = cfg_cls(feature_size=feature_size, **overrides)
    return config


# Representation v2 as chosen by measurement (docs/results/representation.md): both
# vectors, the signals block, and an untrained ranker that ranks like "highest mean
# log-probability, then agreement with the other samples" until data pulls it away.
RECOMMENDED_VECTORS: tuple[VectorPart, ...] = ("last", "mean")
RECOMMENDED_SIGNAL_PRIOR: dict[str, float] = {"mean_logprob": 1.0, "agreement": 1.0}


def recommended_config(kind: str, feature_size: int, **overrides: Any) -> RankerConfig:
    """The list/point config the representation study chose: last + mean + signals, with a prior.

    ``make_config`` keeps the paper's last-token-only default (old callers and old
    checkpoints); this is what new rankers should use when central sends mean vectors.
    """
    settings: dict[str, Any] = {
        "vectors": RECOMMENDED_VECTORS,
        "signal_prior": dict(RECOMMENDED_SIGNAL_PRIOR),
        **overrides,
    }
    return make_config(kind, feature_size, signals=True, **settings)


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
        raise ConfigError(f"checkpoint has unknown ranker kind {ckpt.kind!r}")
    cfg_cls = RANKER_KINDS[ckpt.kind][1]
    names = {f.name for f in dataclasses.fields(cfg_cls)}
    config = cfg_cls(**{k: v for k, v in ckpt.config.items() if k in names})
    module = build_ranker(config)
    module.load_checkpoint(ckpt)
    return module
