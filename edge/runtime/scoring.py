"""Ranking with an exported ranker, using onnxruntime only (no torch).

This is the part an app ships: numpy + onnxruntime. A graph always takes
``instruction`` (B, d) and ``candidates`` (B, K, d); it may also declare the
representation's other parts (``edge.runtime.parts``): ``mean_candidates``
(B, K, d), the mean over each response's tokens, and the parts computed on the
device from the text, ``signals`` (B, K, S, ``edge.runtime.signals``) and
``lexicon`` (B, K, C, ``edge.runtime.lexicon``). The session feeds exactly
the inputs its graph declares: ``score_generation`` builds them from a
``Generation`` (computing the device parts, and refusing a graph that was
built for another version of one), and ``score`` takes them as keyword
arguments. A missing or mis-sized input raises FeatureError naming it.

A graph may record the identity of the features it was trained on (source
model, weights checksum, layer: ``edge.runtime.onnx_meta``). Then
``score_generation`` and ``rank_generation`` refuse a generation whose own
identity (``Generation.identity``, filled by the client) names another model
or layer, or lacks a vector part the graph reads, with a FeatureError saying
both; a graph without one (saved before identities existed) accepts any, as
before. Raw arrays (``score``, ``rank``, ``score_batch``) carry no identity,
so only their shapes are checked: an app that feeds arrays itself must keep
them from the model and layer the ranker was trained on.

Loading (a path or the bytes, one intra-op thread) is ``edge.runtime.session``'s,
shared with SWIFT's token session. ``Ranker`` adds a thread-safe hot swap: a new
version is loaded and validated *before* it replaces the current one, readers
never take a lock (they read one reference), and the previous versions are kept
for rollback.

Importing this module must never import torch (checked by the test suite).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edge._errors import CorruptModelError, FeatureError, RankerError
from edge.runtime.features import as_candidates, as_vector, check_finite
from edge.runtime.lexicon import candidate_lexicon
from edge.runtime.onnx_meta import (
    INPUT_CANDIDATES,
    INPUT_INSTRUCTION,
    INPUT_LEXICON,
    INPUT_MEAN_CANDIDATES,
    INPUT_SIGNALS,
    INPUT_TOKENS,
    META_FEATURE_SIZE,
    META_KIND,
    OUTPUT_SCORES,
    read_identity,
)
from edge.runtime.parts import PARTS, DevicePart, PartSpec
from edge.runtime.session import ModelSource, OnnxSession
from edge.runtime.signals import candidate_signals
from edge.runtime.types import Candidate, FeatureIdentity, Generation

__all__ = ["Ranker", "Ranking", "RankingSession"]


@dataclass(frozen=True)
class Ranking:
    """The candidates of one group ordered best first."""

    order: np.ndarray  # (K,) candidate indices, best first
    scores: np.ndarray  # (K,) scores in the original candidate order

    @property
    def best(self) -> int:
        """Index of the highest-scoring candidate."""
        return int(self.order[0])


# The optional inputs (every part but the last-token vector), by graph input name.
_OPTIONAL_INPUTS: dict[str, PartSpec] = {
    spec.input: spec for spec in PARTS.values() if spec.input != INPUT_CANDIDATES
}
# How the device computes each of its parts from the candidates.
_COMPUTE: dict[DevicePart, Callable[[Sequence[Candidate]], np.ndarray]] = {
    "signals": candidate_signals,
    "lexicon": candidate_lexicon,
}


class RankingSession(OnnxSession):
    """One loaded ONNX ranker: validates features and scores candidates."""

    def __init__(self, data: bytes, source: str = "<bytes>", *, threads: int = 1) -> None:
        super().__init__(data, source, threads=threads)
        self.feature_size = self._check_io()
        self.kind: str | None = self.metadata.get(META_KIND)
        # the features it was trained on; None: not recorded, generations are not checked
        self.identity: FeatureIdentity | None = read_identity(self.metadata)
        # The optional v2 inputs the graph declares, each with its last dimension if fixed.
        self.extra_inputs: dict[str, int | None] = {
            i.name: _last_dim(i.shape)
            for i in self._session.get_inputs()
            if i.name in _OPTIONAL_INPUTS
        }
        unknown = {i.name for i in self._session.get_inputs()} - {
            INPUT_INSTRUCTION,
            INPUT_CANDIDATES,
            *self.extra_inputs,
        }
        if unknown:
            raise CorruptModelError(
                f"graph declares inputs {sorted(unknown)} this runtime cannot provide",
                self._where,
            )

    @property
    def input_names(self) -> tuple[str, ...]:
        """Every input the graph reads: instruction, candidates, then any v2 inputs."""
        return (INPUT_INSTRUCTION, INPUT_CANDIDATES, *self.extra_inputs)

    @property
    def signals_version(self) -> int | None:
        """The SIGNALS_VERSION the graph was built for (None: it reads no signals)."""
        return self.part_version("signals")

    @property
    def lexicon_version(self) -> int | None:
        """The LEXICON_VERSION the graph was built for (None: it reads no lexicon)."""
        return self.part_version("lexicon")

    def part_version(self, part: DevicePart) -> int | None:
        """The version of a device part the graph was built for, as its metadata records
        it (None: the graph does not read the part, or records no version)."""
        spec = PARTS[part]
        if spec.input not in self.extra_inputs or spec.version_key is None:
            return None
        value = self.metadata.get(spec.version_key, "")
        return int(value) if value.isdigit() else None

    def _check_io(self) -> int | None:
        """Check the graph has the ranker I/O contract; return d when it is known."""
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        missing = {INPUT_INSTRUCTION, INPUT_CANDIDATES} - inputs.keys()
        if missing or OUTPUT_SCORES not in outputs:
            kind = self.metadata.get(META_KIND, "unknown")
            per_token = INPUT_TOKENS in inputs
            hint = "; score it with edge.swift.TokenRankingSession" if per_token else ""
            raise CorruptModelError(
                f"not a ranker graph: a {kind!r} ranker with inputs {sorted(inputs)}, outputs "
                f"{sorted(outputs)}; expected inputs {INPUT_INSTRUCTION!r}, {INPUT_CANDIDATES!r} "
                f"and output {OUTPUT_SCORES!r}{hint}",
                self._where,
            )
        graph_d = _last_dim(inputs[INPUT_CANDIDATES].shape)
        meta = self.metadata.get(META_FEATURE_SIZE)
        meta_d = int(meta) if meta is not None and meta.isdigit() else None
        if graph_d is not None and meta_d is not None and graph_d != meta_d:
            raise CorruptModelError(
                f"metadata says feature size {meta_d} but the graph takes {graph_d}", self._where
            )
        return meta_d if meta_d is not None else graph_d

    # -- scoring ---------------------------------------------------------------------
    def score_batch(
        self,
        instructions: np.ndarray,
        candidates: np.ndarray,
        *,
        mean_candidates: np.ndarray | None = None,
        signals: np.ndarray | None = None,
        lexicon: np.ndarray | None = None,
    ) -> np.ndarray:
        """Score B groups at once: (B, d) and (B, K, d) -> (B, K) float32.

        ``mean_candidates`` (B, K, d), ``signals`` (B, K, S) and ``lexicon``
        (B, K, C) are needed only when the graph declares them (see
        ``extra_inputs``); otherwise ignored.
        """
        inst = np.asarray(instructions)
        cand = np.asarray(candidates)
        if inst.dtype.kind != "f" or cand.dtype.kind != "f":
            bad = inst.dtype if inst.dtype.kind != "f" else cand.dtype
            raise FeatureError(f"features have dtype {bad}, expected float32 or float16")
        inst = np.ascontiguousarray(inst, dtype=np.float32)
        cand = np.ascontiguousarray(cand, dtype=np.float32)
        if inst.ndim != 2 or cand.ndim != 3 or cand.shape[0] != inst.shape[0]:
            raise FeatureError(
                f"batch shapes {inst.shape} and {cand.shape} do not match (B, d) and (B, K, d)"
            )
        if cand.shape[1] == 0:
            raise FeatureError("candidate features are empty: at least one candidate is needed")
        for what, arr in (("instruction feature", inst), ("candidate features", cand)):
            if self.feature_size is not None and arr.shape[-1] != self.feature_size:
                raise FeatureError(
                    f"{what}: feature has {arr.shape[-1]} values, ranker expects "
                    f"{self.feature_size}"
                )
            check_finite(arr, what)
        extras = self._extras(cand.shape, mean_candidates, signals, lexicon)
        return self._run({INPUT_INSTRUCTION: inst, INPUT_CANDIDATES: cand, **extras})

    def score(
        self,
        instruction: np.ndarray,
        candidates: np.ndarray,
        *,
        mean_candidates: np.ndarray | None = None,
        signals: np.ndarray | None = None,
        lexicon: np.ndarray | None = None,
    ) -> np.ndarray:
        """Score one group: instruction (d,), candidates (K, d) -> (K,) float32.

        ``mean_candidates`` (K, d), ``signals`` (K, S) and ``lexicon`` (K, C) as in
        ``score_batch``.
        """
        inst = as_vector(instruction, self.feature_size)
        cand = as_candidates(candidates, self.feature_size)
        if self.feature_size is None and cand.shape[1] != inst.shape[0]:
            raise FeatureError(
                f"candidate feature has {cand.shape[1]} values, instruction has {inst.shape[0]}"
            )
        extras = self._extras(
            cand[None].shape,
            *(
                None if x is None else np.asarray(x)[None]
                for x in (mean_candidates, signals, lexicon)
            ),
        )
        feeds = {INPUT_INSTRUCTION: inst[None], INPUT_CANDIDATES: cand[None], **extras}
        return self._run(feeds)[0]

    def rank(
        self,
        instruction: np.ndarray,
        candidates: np.ndarray,
        *,
        mean_candidates: np.ndarray | None = None,
        signals: np.ndarray | None = None,
        lexicon: np.ndarray | None = None,
    ) -> Ranking:
        """Order one group's candidates best first (stable for ties)."""
        scores = self.score(
            instruction,
            candidates,
            mean_candidates=mean_candidates,
            signals=signals,
            lexicon=lexicon,
        )
        return Ranking(order=np.argsort(-scores, kind="stable"), scores=scores)

    def score_generation(
        self,
        generation: Generation,
        *,
        signals: np.ndarray | None = None,
        lexicon: np.ndarray | None = None,
    ) -> np.ndarray:
        """Score a generation's candidates, feeding every input the graph declares.

        ``signals`` and ``lexicon`` are the candidates' on-device parts when the
        caller has already computed them (``candidate_signals(generation.candidates)``,
        ``candidate_lexicon(...)``, e.g. to store them too); otherwise they are
        computed here, when the graph reads them. A graph built for another
        version of a device part raises FeatureError, as does a generation from
        another model or layer than the one the ranker recorded (see
        `check_generation`)."""
        self.check_generation(generation)
        cands = generation.candidates
        if not cands:
            raise FeatureError("candidate features are empty: at least one candidate is needed")
        return self.score(
            generation.instruction,
            generation.features,
            mean_candidates=self._mean_of(cands),
            signals=self._device_part(cands, "signals", signals),
            lexicon=self._device_part(cands, "lexicon", lexicon),
        )

    def rank_generation(
        self,
        generation: Generation,
        *,
        signals: np.ndarray | None = None,
        lexicon: np.ndarray | None = None,
    ) -> Ranking:
        """Order a generation's candidates best first (stable for ties); ``signals`` and
        ``lexicon`` as in ``score_generation``."""
        scores = self.score_generation(generation, signals=signals, lexicon=lexicon)
        return Ranking(order=np.argsort(-scores, kind="stable"), scores=scores)

    def check_generation(self, generation: Generation) -> None:
        """Raise FeatureError when `generation`'s features are not what this ranker
        was trained on: another model (weights checksum), another layer, or a
        vector part missing. Either side without an identity passes."""
        if self.identity is None or generation.identity is None:
            return
        # The parts the device computes are checked by version where they are computed
        # (_device_part), not asked of central.
        central = tuple(p for p in self.identity.parts if p not in _COMPUTE)
        problem = dataclasses.replace(self.identity, parts=central).mismatch(generation.identity)
        if problem is not None:
            where = f" ({self._where})" if self._where else ""
            raise FeatureError(f"{problem}{where}")

    # -- the optional inputs ---------------------------------------------------------
    def _mean_of(self, cands: Sequence[Candidate]) -> np.ndarray | None:
        if INPUT_MEAN_CANDIDATES not in self.extra_inputs:
            return None
        for c in cands:
            if c.mean_feature is None:
                raise FeatureError(
                    f"ranker input {INPUT_MEAN_CANDIDATES!r} is missing: candidate {c.index} "
                    f"has no mean_feature, and this ranker reads "
                    f"{_OPTIONAL_INPUTS[INPUT_MEAN_CANDIDATES].provide}"
                )
        return np.stack([np.asarray(c.mean_feature) for c in cands])

    def _device_part(
        self, cands: Sequence[Candidate], part: DevicePart, computed: np.ndarray | None
    ) -> np.ndarray | None:
        """A device part of the candidates when the graph reads it (``computed`` when
        the caller gives it), after checking the graph was built for this version."""
        spec = PARTS[part]
        if spec.input not in self.extra_inputs:
            return None
        wanted = self.part_version(part)
        if wanted != spec.version:
            raise FeatureError(
                f"ranker input {spec.input!r}: the ranker was built for {part} version "
                f"{wanted}, this runtime computes version {spec.version}; retrain or "
                f"pass {part}= computed the ranker's way"
            )
        return _COMPUTE[part](cands) if computed is None else computed

    def _extras(
        self,
        shape: tuple[int, ...],
        mean_candidates: np.ndarray | None,
        signal_values: np.ndarray | None,
        lexicon: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Validated arrays for the optional inputs the graph declares, by name."""
        b, k, d = shape
        given = {
            INPUT_MEAN_CANDIDATES: mean_candidates,
            INPUT_SIGNALS: signal_values,
            INPUT_LEXICON: lexicon,
        }
        feeds: dict[str, np.ndarray] = {}
        for name, size in self.extra_inputs.items():
            spec = _OPTIONAL_INPUTS[name]
            value = given[name]
            if value is None:
                raise FeatureError(f"ranker input {name!r} is missing: this ranker reads "
                                   f"{spec.provide}")  # fmt: skip
            arr = np.asarray(value)
            if arr.dtype.kind != "f":
                raise FeatureError(f"ranker input {name!r} has dtype {arr.dtype}, expected float")
            last = spec.size(d) if size is None else size
            if arr.shape != (b, k, last):
                got = arr.shape[1:] if arr.shape[:1] == (1,) and b == 1 else arr.shape
                want = (k, last) if b == 1 else (b, k, last)
                raise FeatureError(f"ranker input {name!r} has shape {got}, expected {want}")
            arr = np.ascontiguousarray(arr, dtype=np.float32)
            check_finite(arr, f"ranker input {name!r}")
            feeds[name] = arr
        return feeds


def _last_dim(shape: Sequence[object]) -> int | None:
    """The fixed size of an input's last axis, None when symbolic or unknown."""
    last = shape[-1] if len(shape) else None
    return last if isinstance(last, int) else None


@dataclass(frozen=True)
class _Active:
    session: RankingSession
    version: object  # whatever the app uses to name versions (int, str, None)


class Ranker:
    """A ranker that can be swapped to a new version while others are scoring.

    ``score`` and ``rank`` read the active (session, version) pair once, so a call
    in flight finishes on the version it started with. ``swap`` loads the new
    model first: a corrupt file raises and leaves the active version untouched.
    """

    def __init__(
        self,
        model: ModelSource | RankingSession,
        *,
        version: object = None,
        threads: int = 1,
        keep: int = 5,
    ) -> None:
        self._threads = threads
        self._keep = max(1, keep)
        self._lock = threading.Lock()
        self._history: list[_Active] = []
        self._active = _Active(self._session(model), version)

    def _session(self, model: ModelSource | RankingSession) -> RankingSession:
        if isinstance(model, RankingSession):
            return model
        return RankingSession.load(model, threads=self._threads)

    @property
    def version(self) -> object:
        return self._active.version

    @property
    def session(self) -> RankingSession:
        return self._active.session

    @property
    def feature_size(self) -> int | None:
        return self._active.session.feature_size

    @property
    def metadata(self) -> Mapping[str, str]:
        return self._active.session.metadata

    def swap(self, model: ModelSource | RankingSession, version: object = None) -> object:
        """Make ``model`` active; returns the version it replaced."""
        new = _Active(self._session(model), version)
        with self._lock:
            old = self._active
            self._history = [*self._history, old][-self._keep :]
            self._active = new
        return old.version

    def rollback(self) -> object:
        """Return to the previously active version; returns the version now active."""
        with self._lock:
            if not self._history:
                raise RankerError("nothing to roll back to: no earlier version was active")
            self._active = self._history.pop()
            return self._active.version

    def score(
        self,
        instruction: np.ndarray,
        candidates: np.ndarray,
        *,
        mean_candidates: np.ndarray | None = None,
        signals: np.ndarray | None = None,
        lexicon: np.ndarray | None = None,
    ) -> np.ndarray:
        return self._active.session.score(
            instruction,
            candidates,
            mean_candidates=mean_candidates,
            signals=signals,
            lexicon=lexicon,
        )

    def score_batch(
        self,
        instructions: np.ndarray,
        candidates: np.ndarray,
        *,
        mean_candidates: np.ndarray | None = None,
        signals: np.ndarray | None = None,
        lexicon: np.ndarray | None = None,
    ) -> np.ndarray:
        return self._active.session.score_batch(
            instructions,
            candidates,
            mean_candidates=mean_candidates,
            signals=signals,
            lexicon=lexicon,
        )

    def rank(
        self,
        instruction: np.ndarray,
        candidates: np.ndarray,
        *,
        mean_candidates: np.ndarray | None = None,
        signals: np.ndarray | None = None,
        lexicon: np.ndarray | None = None,
    ) -> Ranking:
        return self._active.session.rank(
            instruction,
            candidates,
            mean_candidates=mean_candidates,
            signals=signals,
            lexicon=lexicon,
        )

    def score_generation(
        self,
        generation: Generation,
        *,
        signals: np.ndarray | None = None,
        lexicon: np.ndarray | None = None,
    ) -> np.ndarray:
        return self._active.session.score_generation(generation, signals=signals, lexicon=lexicon)

    def rank_generation(
        self,
        generation: Generation,
        *,
        signals: np.ndarray | None = None,
        lexicon: np.ndarray | None = None,
    ) -> Ranking:
        return self._active.session.rank_generation(generation, signals=signals, lexicon=lexicon)

    @property
    def identity(self) -> FeatureIdentity | None:
        """The features the active version was trained on (None: not recorded)."""
        return self._active.session.identity
