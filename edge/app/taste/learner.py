"""The taste learner: feedback -> taste head -> one ONNX ranker, per event (no torch).

``TasteLearner.learn(user, name)`` (the ``edge.app.learning.UserLearner`` that
``TasteConfig`` builds, ``PersonalRanker``'s default) is the update an app runs
after feedback:

1. under the registry's per-ranker lock (so two learners of one user, in two
   processes or two threads, take turns and neither loses the other's events),
   read the events newer than what this process already holds for the user;
2. add their shown sets as rows (last-token vector, mean vector when present,
   signals and lexicon of the current versions), scored once by the global ranker of that
   name, if the registry has one (its score is the head's offset, weighted by
   the user's own ``1 + u``);
3. fit the heads (``edge.app.taste.fit``: a few heads that trust the parts
   differently, mixed by how well each predicted the user's feedback before
   learning it), warm-started from the previous fit;
4. compose the global graph and the head into one ONNX file
   (``edge.app.taste.compose``) and save it as a new registry version
   with the head's weights, compare-and-swap on the current version.

The composed graph records the identity of the features it learned from (the
source model's name and weights checksum, the layer): the one ``learn`` is
given (``PersonalRanker`` passes its generations'), else the one the user's
current version recorded, else the global graph's. Ranking a generation of
another model or layer with it then raises FeatureError.

The rows live in memory between calls (one entry per store, user and ranker,
a few most recent users kept), so a steady-state update reads only the new
events; a fresh process rebuilds them once from the store (at most
``history`` events). Each save records the cursor (the newest event learned):
the next update learns whatever came after it, whoever saved it. Events a
rollback forgot (``Registry.forgotten``) are never read, neither as new events
nor as history, and each save records them (``FORGOTTEN_KEY``).

The learner continues from the newest saved head that verifies: a damaged
weights file of the current version falls back to the version before it, as
ranking does. No torch anywhere: numpy, onnx and onnxruntime.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge._errors import CorruptModelError, FeatureError, UnknownUserError
from edge.app.learning import IDENTITY_KEY, FitReport, LearnReport, StartedFrom
from edge.app.lineage import CURSOR_KEY, FORGOTTEN_KEY, EventRanges, learnable
from edge.app.records import FeedbackEvent, ShownSet
from edge.app.registry import Registry, VersionInfo
from edge.app.store import FeedbackStore
from edge.app.taste.basis import shipped_basis
from edge.app.taste.config import TasteConfig
from edge.app.taste.fit import TasteFit
from edge.app.taste.head import TasteHead
from edge.app.taste.memory import GLOBALS, ROWS, GlobalRanker, UserRows, global_key
from edge.app.taste.pairs import Reaction
from edge.runtime.lexicon import LEXICON_VERSION
from edge.runtime.onnx_meta import META_PREFIX
from edge.runtime.parts import PARTS, Part, part_layout
from edge.runtime.scoring import RankingSession
from edge.runtime.signals import SIGNALS_VERSION
from edge.runtime.types import FeatureIdentity

__all__ = ["LEARNER_NAME", "TasteLearner"]

LEARNER_NAME = "taste_head"  # the "learner" entry of every version's metadata


def _reaction(event: FeedbackEvent) -> Reaction:
    return Reaction(event.kind, event.candidate, event.value, event.rejected)


class TasteLearner:
    """Keeps users' taste heads up to date from a FeedbackStore into a Registry."""

    def __init__(
        self, store: FeedbackStore, registry: Registry, config: TasteConfig | None = None
    ) -> None:
        self.store = store
        self.registry = registry
        self.config = config or TasteConfig()

    # -- public ------------------------------------------------------------------------
    def learn(self, user: str, name: str, identity: FeatureIdentity | None = None) -> LearnReport:
        """Update ``user``'s ranker ``name`` from the feedback recorded for task ``name``.

        ``identity`` names the features the feedback's sets carry (their
        generations' ``identity``); None keeps what the current version recorded.
        """
        started = time.perf_counter()
        with self.registry.locked(user, name):
            key = (str(Path(self.store.path).resolve()), user, name)
            rows = ROWS.take(key)
            report = self._learn_locked(user, name, rows, key, started, identity)
        return report

    # -- one update ----------------------------------------------------------------------
    def _learn_locked(
        self,
        user: str,
        name: str,
        rows: UserRows | None,
        key: tuple[str, str, str],
        started: float,
        identity: FeatureIdentity | None = None,
    ) -> LearnReport:
        current = self.registry.current(user, name) if self.registry.has(user, name) else None
        saved_cursor = int(current.metadata.get(CURSOR_KEY, 0)) if current else 0
        forgotten = self.registry.forgotten(user, name)
        glob = self._global(name)
        glob_key = glob.key if glob else None
        new = self._events(user, name, rows.cursor, forgotten) if rows is not None else []
        if rows is not None and self._stale(rows, new, glob_key, forgotten):
            rows = None
        if rows is None:
            every = self._events(user, name, 0, forgotten)
            new = _same_size_as_newest(every)[-self.config.history :]
            if not new:
                return self._skipped(user, name, saved_cursor, started)
            rows = self._empty_rows(new, glob, forgotten)
        warm = self._warm_start(user, name, rows, current)
        self._ingest(rows, new, glob)
        pending = [e for e in rows.event_ids if e > saved_cursor]
        if len(pending) < max(1, self.config.min_new_events):
            ROWS.put(key, rows)
            return self._skipped(user, name, saved_cursor, started, len(pending))
        touched = {e.shown.set_id for e in new if e.event_id > saved_cursor}
        before = rows.fit.loss(touched)
        passes, refresh = self.config.cold_passes, 1.0  # cold: exact gradients
        if warm.memory_kept:  # warm: an iteration per new event follows the optimum
            passes = min(passes, self.config.passes * len(pending))
            refresh = self.config.refresh
        fit = rows.fit.fit(passes, refresh)
        after = rows.fit.loss(touched)
        head = rows.fit.head()
        if identity is None and current is not None:
            identity = FeatureIdentity.from_dict(current.metadata.get(IDENTITY_KEY))
        info = self._save(user, name, head, glob, current, rows, fit, len(pending), identity)
        rows.weights_sha256 = info.weights_sha256
        ROWS.put(key, rows)
        return LearnReport(
            user=user,
            name=name,
            updated=True,
            version=info.version,
            saved=info,
            new_events=len(pending),
            replayed_events=len(rows.event_ids) - len(pending),
            examples=len(rows.fit.pairs().weights),
            started_from=warm.origin,
            loss_before=before,
            loss_after=after,
            cursor=rows.cursor,
            seconds=time.perf_counter() - started,
            fit=fit,
            warm_version=warm.version,
            global_version=glob.info.version if glob else None,
        )

    def _skipped(
        self, user: str, name: str, cursor: int, started: float, new_events: int = 0
    ) -> LearnReport:
        return LearnReport.skipped(user, name, cursor, time.perf_counter() - started, new_events)

    # -- reading -----------------------------------------------------------------------
    def _events(
        self, user: str, name: str, since: int, forgotten: EventRanges
    ) -> list[FeedbackEvent]:
        try:
            return learnable(self.store.events(user, since=since, task=name), forgotten)
        except UnknownUserError:
            return []

    def _parts(self, events: Sequence[FeedbackEvent]) -> tuple[Part, ...]:
        """The parts to fit: mean vectors and the lexicon only when the newest set
        carries them (the lexicon needs the texts); an older set that lacks one adds
        zeros there, no information."""
        parts: list[Part] = ["last"]
        newest = events[-1].shown if events else None
        if self.config.use_mean and newest is not None and newest.mean_candidates is not None:
            parts.append("mean")
        if self.config.use_signals:
            parts.append("signals")
        if self.config.use_lexicon and newest is not None and _has_lexicon(newest):
            parts.append("lexicon")
        return tuple(parts)

    def _stale(
        self,
        rows: UserRows,
        new: Sequence[FeedbackEvent],
        glob_key: str | None,
        forgotten: EventRanges,
    ) -> bool:
        """Whether held rows must be rebuilt from the store: another config, the global
        ranker changed (the offsets did, and perhaps the basis), the parts or the
        feature size did (another model), a rollback forgot events the rows hold, or
        the history outgrew twice its limit."""
        d = rows.fit.layout["last"]
        return (
            rows.fit.config != self.config
            or rows.global_key != glob_key
            or rows.forgotten != forgotten
            or (bool(new) and self._parts(new) != rows.fit.parts)
            or any(e.shown.candidates.shape[1] != d for e in new)
            or len(rows.event_ids) + len(new) > 2 * self.config.history
        )

    def _empty_rows(
        self, events: Sequence[FeedbackEvent], glob: GlobalRanker | None, forgotten: EventRanges
    ) -> UserRows:
        d = int(events[-1].shown.candidates.shape[1])
        layout = part_layout(d, self._parts(events))
        shipped = glob.basis if glob else None
        fit = TasteFit(layout, self.config, glob is not None, shipped)
        glob_key = glob.key if glob else None
        return UserRows(fit, global_key=glob_key, forgotten=forgotten)

    def _ingest(
        self, rows: UserRows, events: Sequence[FeedbackEvent], glob: GlobalRanker | None
    ) -> None:
        """Add the events' sets and reactions to the fit."""
        touched: dict[str, None] = {}
        for event in events:
            shown = event.shown
            if not rows.fit.has_set(shown.set_id):
                self._add_set(rows.fit, shown, glob)
            rows.reactions.setdefault(shown.set_id, []).append(_reaction(event))
            touched[shown.set_id] = None
            rows.event_ids.append(event.event_id)
            rows.cursor = max(rows.cursor, event.event_id)
        for set_id in touched:
            rows.fit.set_reactions(set_id, rows.reactions[set_id])

    def _add_set(self, fit: TasteFit, shown: ShownSet, glob: GlobalRanker | None) -> None:
        signals = shown.signal_block()
        lexicon = shown.lexicon_block() if "lexicon" in fit.parts else None
        parts = {
            "last": shown.candidates,
            "mean": shown.mean_candidates,
            "signals": signals,
            "lexicon": lexicon,
        }
        fitted = {name: value for name, value in parts.items() if name in fit.parts}
        fit.add_set(shown.set_id, fitted, _global_scores(glob, shown, signals, lexicon))

    # -- the global ranker and the warm start -------------------------------------------
    def _global(self, name: str) -> GlobalRanker | None:
        """The newest global ranker of ``name`` at or before its current version that
        verifies and loads; None without one. Held per process by checksum."""
        if not self.registry.has(None, name):
            return None
        versions = self.registry.versions(None, name)
        current = self.registry.current(None, name).version
        for info in sorted(versions, key=lambda v: v.version, reverse=True):
            if info.version > current:
                continue
            held = GLOBALS.get(global_key(info))
            if held is not None:
                return held
            try:
                model = self.registry.load_model(None, name, info.version)
                session = RankingSession(model, f"global/{name} v{info.version}")
            except CorruptModelError:
                continue
            glob = GlobalRanker(info, model, session, self._basis(name, info))
            return GLOBALS.put(glob.key, glob)
        return None

    def _basis(self, name: str, info: VersionInfo) -> dict[str, np.ndarray]:
        """The basis a global version's weights archive ships; none when it ships none
        or the archive is damaged (its model still ranks: the random basis stands in,
        and the user's versions record which they used)."""
        try:
            weights = self.registry.load_weights(None, name, info.version)
            return shipped_basis(weights, f"global/{name} v{info.version} weights")
        except CorruptModelError:
            return {}

    def _warm_start(
        self, user: str, name: str, rows: UserRows, current: VersionInfo | None
    ) -> _Warm:
        """Make the fit's weights equal the newest saved head that verifies."""
        origin: StartedFrom = "global" if rows.global_key else "scratch"
        if current is not None and current.weights_sha256 == rows.weights_sha256:
            return _Warm("user", current.version, memory_kept=True)
        if current is None and rows.weights_sha256 is None:  # nothing saved yet
            return _Warm(origin, None, memory_kept=rows.fit.num_rows > 0)
        good = self.registry.last_good_weights(user, name) if current is not None else None
        head = None
        if good is not None:
            try:
                head = TasteHead.from_bytes(good[1], f"{user}/{name} v{good[0].version}")
            except CorruptModelError:
                head = None  # e.g. the weights of a torch ranker: the head starts afresh
        if head is not None and any(
            len(w) != rows.fit.layout.get(p, len(w)) for p, w in head.weights.items()
        ):
            head = None  # another model's features (or a part computed another way)
        if head is not None:
            head = _current_parts(head)
        evidence = _evidence(good[0].metadata) if head is not None and good is not None else None
        rows.fit.start_from(head, evidence)
        if head is None or good is None:
            rows.weights_sha256 = None
            return _Warm(origin, None, memory_kept=False)
        rows.weights_sha256 = good[0].weights_sha256
        return _Warm("user", good[0].version, memory_kept=False)

    # -- writing -------------------------------------------------------------------------
    def _save(
        self,
        user: str,
        name: str,
        head: TasteHead,
        glob: GlobalRanker | None,
        current: VersionInfo | None,
        rows: UserRows,
        fit: FitReport,
        new_events: int,
        identity: FeatureIdentity | None,
    ) -> VersionInfo:
        from edge.app.taste.compose import compose_ranker  # onnx: loaded at the first save

        meta = {
            META_PREFIX + "user": user,
            META_PREFIX + "name": name,
            META_PREFIX + "global_sha256": glob.info.model_sha256 if glob else "",
            META_PREFIX + "global_version": str(glob.info.version) if glob else "",
        }
        model = compose_ranker(head, glob.model if glob else None, meta, identity)
        return self.registry.save(
            user,
            name,
            model,
            weights=head.to_bytes(),
            metadata={
                "learner": LEARNER_NAME,
                CURSOR_KEY: rows.cursor,
                FORGOTTEN_KEY: [list(r) for r in rows.forgotten],
                "events": len(rows.event_ids),
                "new_events": new_events,
                "pairs": len(rows.fit.pairs().weights),
                "blocks": list(head.parts),
                "signals_version": SIGNALS_VERSION,
                "lexicon_version": LEXICON_VERSION if "lexicon" in head.parts else None,
                "global_version": glob.info.version if glob else None,
                "fit_passes": fit.passes,
                "fit_loss": fit.loss,
                "global_weight": head.global_weight,
                "head_evidence": list(rows.fit.evidence),
                "head_mix": [float(a) for a in rows.fit.mix()],
                "basis": {p: b.describe() for p, b in rows.fit.bases.items()},
                IDENTITY_KEY: identity.to_dict() if identity and identity.known else None,
            },
            expect_current=current.version if current else 0,
        )


@dataclass(frozen=True)
class _Warm:
    origin: StartedFrom  # where the weights came from
    version: int | None  # the saved version they came from, if any
    memory_kept: bool  # True: the in-memory fit continues (few passes suffice)


def _evidence(metadata: dict[str, object]) -> list[float] | None:
    """The heads' prequential evidence a version recorded (None if it has none or it
    is malformed): a restarted learner keeps the user's mix instead of restarting it
    even."""
    value = metadata.get("head_evidence")
    if not isinstance(value, list) or not all(isinstance(x, int | float) for x in value):
        return None
    return [float(x) for x in value]


def _same_size_as_newest(events: list[FeedbackEvent]) -> list[FeedbackEvent]:
    """The events whose features have the newest event's size: after a switch to
    another model, the user's taste is learned again over that model's features."""
    if not events:
        return events
    d = events[-1].shown.candidates.shape[1]
    return [e for e in events if e.shown.candidates.shape[1] == d]


def _has_lexicon(shown: ShownSet) -> bool:
    """Whether a set can give the lexicon block (stored, or texts to compute it from)."""
    return shown.texts is not None or (
        shown.lexicon is not None and shown.lexicon_version == LEXICON_VERSION
    )


def _current_parts(head: TasteHead) -> TasteHead:
    """``head`` without the weights of a device part fitted on another version of its
    columns (they would weigh columns that now mean something else): that part
    starts afresh, the others continue."""
    stale = [p for p in head.parts if p != "last" and head.version_of(p) != PARTS[p].version]
    if not stale:
        return head
    weights = {p: w for p, w in head.weights.items() if p not in stale}
    return dataclasses.replace(head, weights=weights)


def _global_scores(
    glob: GlobalRanker | None, shown: ShownSet, signals: np.ndarray, lexicon: np.ndarray | None
) -> np.ndarray:
    """The global ranker's scores of a stored set; zeros without one, or when the set
    lacks an input the global graph reads (e.g. mean vectors on an old event)."""
    k = shown.k
    if glob is None:
        return np.zeros(k)
    try:
        return glob.session.score(
            shown.instruction.astype(np.float32),
            shown.candidates.astype(np.float32),
            mean_candidates=shown.mean_candidates,
            signals=signals,
            lexicon=lexicon if lexicon is not None else shown.lexicon_block(),
        ).astype(np.float64)
    except FeatureError:
        return np.zeros(k)
