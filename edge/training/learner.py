"""Incremental per-user learning: new feedback + replay -> new registry version (torch).

``Learner.learn(user, name)`` (the ``edge.app.learning.UserLearner`` that
``LearnerConfig`` builds) is the whole loop an app runs in the background:

1. read the events newer than the cursor stored with the user's current version;
2. mix in a random sample of older events (replay) so one burst of new feedback
   does not make the ranker forget what it learned before;
3. start from the user's current weights, else the config's base checkpoint, else
   the registry's global ranker of that name, else a fresh ranker;
4. train a few steps (on every part of the shown sets the ranker reads: the
   last-token vectors, and for a representation v2 ranker the mean vectors and
   signals), export to ONNX, check torch/onnxruntime parity;
5. save a new registry version whose metadata records the new cursor.

A crash anywhere before step 5 leaves the previous version current, and since
the cursor only advances with a saved version, no feedback is skipped. The
whole update holds the registry's lock for the ranker (``Registry.locked``) and
saves with a compare-and-swap on the version it started from, so two processes
learning one user take turns: each event is learned once and the cursor never
moves back. Events a rollback forgot (``Registry.forgotten``) are neither new
events nor replayed. A user whose current version is a taste head (the
torch-free learner's) is refused with a TrainingError saying so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from edge._cache import BoundedCache
from edge._errors import ConfigError, TrainingError
from edge.app.checkpoint import Checkpoint
from edge.app.learning import IDENTITY_KEY, LearnReport, StartedFrom
from edge.app.lineage import CURSOR_KEY, FORGOTTEN_KEY, learnable
from edge.app.registry import Registry, VersionInfo
from edge.app.store import FeedbackStore
from edge.app.taste.head import HEAD_KIND
from edge.app.training_data import events_to_dataset
from edge.runtime.types import FeatureIdentity
from edge.training.export import Exporter, check_parity, export_onnx
from edge.training.loop import TrainConfig, evaluate_loss, train
from edge.training.rankers import (
    RankerModule,
    VectorRanker,
    build_ranker,
    from_checkpoint,
    make_config,
    require_family,
    require_kind,
)

__all__ = ["Learner", "LearnerConfig"]

LEARNER_NAME = "torch"  # the "learner" entry of the versions this learner saves


def _default_train() -> TrainConfig:
    # User data is tiny: one epoch of a handful of events is a step or two, so
    # insist on a minimum number of steps (a fixed length: no held-out slice).
    return TrainConfig(epochs=1, min_steps=30, batch_candidates=64)


@dataclass(frozen=True)
class LearnerConfig:
    """How a Learner builds, trains and exports per-user rankers."""

    kind: str = "list"  # ranker kind for users starting from scratch: a list or point kind
    ranker_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {"hidden_size": 32}
    # A list or point ranker new users start from (before the registry's global ranker
    # of that name); None: none.
    base: Checkpoint | None = field(default=None, repr=False)
    train: TrainConfig = field(default_factory=_default_train)  # optimiser settings per update
    replay_size: int = 256  # older events mixed into each update (0 disables replay)
    min_new_events: int = 1  # skip the update until at least this many new events
    unlabelled: Literal["ignore", "negative"] = "ignore"  # see events_to_dataset
    exporter: Exporter = "auto"  # the fast legacy tracer; "dynamo"/"template" also work
    parity_ks: tuple[int, ...] = (2, 5)  # K values checked torch vs onnxruntime after export
    parity_rtol: float = 1e-4  # parity tolerance relative to the scores (see check_parity)

    def __post_init__(self) -> None:
        # Feedback holds one vector per candidate: per-token kinds (SWIFT) cannot learn from it.
        kinds = [self.kind] + ([self.base.kind] if self.base is not None else [])
        for kind in kinds:
            try:
                require_kind(kind, VectorRanker, "train", "Learner")
            except TrainingError as refusal:  # the train step's refusal, as a config error
                raise ConfigError(str(refusal)) from refusal
        if self.replay_size < 0 or self.min_new_events < 0:
            raise ConfigError("replay_size and min_new_events must be at least 0")

    def build(self, store: FeedbackStore, registry: Registry) -> Learner:
        """The torch learner with these settings (what ``PersonalRanker`` calls)."""
        return Learner(store, registry, self)

    @classmethod
    def per_event(cls, **overrides: Any) -> LearnerConfig:
        """Settings for updating after every feedback event in well under 200 ms.

        The defaults re-train for 30 steps over up to 256 replayed events and
        re-trace the graph on every export: 0.4-2 s per update. One event moves
        the ranker only a little, so a few steps over the new event plus a
        small replay batch suffice, and the exported graph is reused with only
        its weights swapped (``exporter="template"``). Parity is still checked
        at one K different from the tracing example (K=5), so a bad export
        still never becomes current.
        """
        fields: dict[str, Any] = {
            "train": TrainConfig(epochs=1, min_steps=4, batch_candidates=64),
            "replay_size": 32,
            "exporter": "template",
            "parity_ks": (5,),
            **overrides,
        }
        return cls(**fields)


# Recently saved models by the sha256 of their saved weights file. Rebuilding a
# ranker from its checkpoint (fresh init, then load) costs ~15 ms at 4096-d, a
# tenth of a per-event update budget. The weights are content-addressed, so a
# model found under the current version's checksum is exactly what loading would
# give, whichever registry or Learner saved it; a rollback changes the checksum
# and falls back to loading. The learner takes the model out: training mutates
# it, and an update that fails half-way must not leave a mutated model behind
# under the old checksum.
_WARM: BoundedCache[str, VectorRanker] = BoundedCache(4)


class Learner:
    """Keeps users' rankers up to date from a FeedbackStore into a Registry."""

    def __init__(
        self, store: FeedbackStore, registry: Registry, config: LearnerConfig | None = None
    ) -> None:
        self.store = store
        self.registry = registry
        self.config = config or LearnerConfig()

    def _initial(
        self, user: str, name: str, current: VersionInfo | None, feature_size: int
    ) -> tuple[VectorRanker, StartedFrom]:
        """The weights to continue from, refused when they are not a list or point ranker."""
        model, origin = self._start(user, name, current, feature_size)
        return require_family(model, VectorRanker, "train", f"Learner ({origin} weights)"), origin

    def _start(
        self, user: str, name: str, current: VersionInfo | None, feature_size: int
    ) -> tuple[RankerModule, StartedFrom]:
        if current is not None:
            sha256 = current.weights_sha256
            warm = _WARM.take(sha256) if sha256 is not None else None
            if warm is not None:
                return warm, "user"
            weights = self.registry.load_weights(user, name, current.version)
            if weights is not None:
                checkpoint = Checkpoint.from_bytes(weights, f"{user}/{name}")
                if checkpoint.kind == HEAD_KIND:
                    raise TrainingError(
                        f"{user}/{name} v{current.version} is a taste head (the torch-free "
                        "learner's, PersonalRanker's default), which the torch learner cannot "
                        "continue: learn it with TasteConfig (`ranker-edge learn`), or give "
                        "the torch learner a ranker name of its own"
                    )
                return from_checkpoint(checkpoint), "user"
        if self.config.base is not None:
            return from_checkpoint(self.config.base), "base"
        if self.registry.has(None, name):
            weights = self.registry.load_weights(None, name)
            if weights is not None:
                return from_checkpoint(Checkpoint.from_bytes(weights, f"global/{name}")), "global"
        config = make_config(self.config.kind, feature_size, **self.config.ranker_overrides)
        return build_ranker(config, seed=self.config.train.seed), "scratch"

    def learn(self, user: str, name: str, identity: FeatureIdentity | None = None) -> LearnReport:
        """Update ``user``'s ranker ``name`` from feedback recorded for task ``name``.

        ``identity`` names the features the feedback's sets carry (their
        generations' ``identity``), recorded in the exported ranker so that it
        refuses other models' features; None keeps what the current version
        recorded (``IDENTITY_KEY`` in its metadata), if anything.
        """
        start = time.perf_counter()
        with self.registry.locked(user, name):
            return self._learn_locked(user, name, identity, start)

    def _learn_locked(
        self, user: str, name: str, identity: FeatureIdentity | None, start: float
    ) -> LearnReport:
        current = self.registry.current(user, name) if self.registry.has(user, name) else None
        cursor = int(current.metadata.get(CURSOR_KEY, 0)) if current is not None else 0
        forgotten = self.registry.forgotten(user, name)
        new = learnable(self.store.events(user, since=cursor, task=name), forgotten)
        if len(new) < max(1, self.config.min_new_events):
            return LearnReport.skipped(user, name, cursor, time.perf_counter() - start, len(new))
        replay = self.store.sample_events(
            user, self.config.replay_size, up_to=cursor, task=name, seed=new[-1].event_id
        )
        replay = learnable(replay, forgotten)
        new_data = events_to_dataset(new, unlabelled=self.config.unlabelled)
        data = events_to_dataset([*new, *replay], unlabelled=self.config.unlabelled)
        if data.num_groups == 0:
            raise TrainingError(f"{len(new)} new events of {user!r} yield no training example")
        model, origin = self._initial(user, name, current, data.feature_size)
        if model.parts != ("last",):  # a v2 ranker: the sets' mean vectors and signals too
            new_data, data = (
                events_to_dataset(events, unlabelled=self.config.unlabelled, parts=model.parts)
                for events in (new, [*new, *replay])
            )
        if model.feature_size != data.feature_size:
            raise TrainingError(
                f"feedback features have {data.feature_size} values, ranker expects "
                f"{model.feature_size}"
            )
        before = evaluate_loss(model, new_data, self.config.train)
        train(model, data, self.config.train)
        after = evaluate_loss(model, new_data, self.config.train)
        new_cursor = new[-1].event_id
        if identity is None and current is not None:
            identity = FeatureIdentity.from_dict(current.metadata.get(IDENTITY_KEY))
        onnx_bytes = export_onnx(
            model,
            exporter=self.config.exporter,
            metadata={"language_ranker.user": user, "language_ranker.name": name},
            identity=identity,
        )
        if self.config.parity_ks:
            check_parity(model, onnx_bytes, self.config.parity_ks, rtol=self.config.parity_rtol)
        info = self.registry.save(
            user,
            name,
            onnx_bytes,
            weights=model.to_checkpoint().to_bytes(),
            metadata={
                "learner": LEARNER_NAME,
                CURSOR_KEY: new_cursor,
                FORGOTTEN_KEY: [list(r) for r in forgotten],
                "new_events": len(new),
                "replayed_events": len(replay),
                "started_from": origin,
                "loss_before": before,
                "loss_after": after,
                IDENTITY_KEY: identity.to_dict() if identity and identity.known else None,
            },
            expect_current=current.version if current is not None else 0,
        )
        if info.weights_sha256 is not None:
            _WARM.put(info.weights_sha256, model)
        return LearnReport(
            user=user,
            name=name,
            updated=True,
            version=info.version,
            saved=info,
            new_events=len(new),
            replayed_events=len(replay),
            examples=data.num_groups,
            started_from=origin,
            loss_before=before,
            loss_after=after,
            cursor=new_cursor,
            seconds=time.perf_counter() - start,
        )
