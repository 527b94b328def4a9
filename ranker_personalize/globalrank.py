"""The pooled baseline: one global ranker fitted on every user's feedback.

This is what a server would do if users uploaded their feedback: read each
user's store, copy the events into one store under one pseudo-user, and fit
the same torch-free head on all of them (one ONNX ranker, like a user's). The
comparison with the personal rankers is then about *pooling*, not about the
model: the learner, its settings and the representation are the same.

It is also what a new user starts from (the cold start): published as the
registry's global ranker of that name, it ranks until the user's first update,
and the user's own head is fitted on top of its scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from edge.app.personal import STORE_FILE, PersonalRanker
from edge.app.registry import Registry
from edge.app.store import FeedbackEvent, FeedbackStore
from ranker_personalize.simulate import SimConfig, taste_config

__all__ = ["POOLED_USER", "GlobalRanker", "collect_events", "copy_events", "train_global"]

POOLED_USER = "everyone"  # the pseudo-user whose store holds the pooled events


@dataclass(frozen=True)
class GlobalRanker:
    """A fitted global ranker: the ONNX bytes to publish and a device that ranks with it."""

    model: bytes  # the composed ONNX ranker
    weights: bytes  # its head's weights archive
    device: PersonalRanker  # the pooled pseudo-user's ranker (rank with ``device.rank``)
    events: int  # pooled feedback events it was fitted on

    def publish(self, home: Path, name: str) -> None:
        """Save it as the global ranker ``name`` of the registry under ``home``."""
        Registry(home / "rankers").save_global(name, self.model, weights=self.weights)

    def close(self) -> None:
        self.device.close()


def collect_events(
    homes: Sequence[tuple[Path, str]], per_user: int, task: str
) -> list[FeedbackEvent]:
    """The first ``per_user`` events of each (home, user), read from each user's own store."""
    pooled: list[FeedbackEvent] = []
    for home, user in homes:
        with FeedbackStore(home / STORE_FILE) as store:
            pooled += store.events(user, task=task)[:per_user]
    return pooled


def copy_events(events: Sequence[FeedbackEvent], store: FeedbackStore, user: str) -> None:
    """Record ``events`` (their shown sets, then the reactions) as ``user``'s, in order."""
    copied: set[str] = set()
    for event in events:
        shown = event.shown
        set_id = f"{shown.user}.{shown.set_id}"  # set ids are unique per user only
        if set_id not in copied:
            store.record_shown(
                user,
                set_id,
                shown.instruction,
                shown.candidates,
                texts=shown.texts,
                task=shown.task,
                mean_candidates=shown.mean_candidates,
                scalars=shown.scalars,
            )
            copied.add(set_id)
        if event.kind == "thumb":
            store.thumbs(user, set_id, event.candidate, bool((event.value or 0.0) > 0.5))
        elif event.kind == "pick":
            store.pick(user, set_id, event.candidate, list(event.rejected))
        else:
            store.score(user, set_id, event.candidate, float(event.value or 0.0))


def train_global(events: list[FeedbackEvent], home: Path, config: SimConfig) -> GlobalRanker:
    """Fit the torch-free head on the pooled ``events`` in a fresh home (one cold fit).

    The learner reads every pooled event (its history is raised to their count).
    """
    learner = replace(taste_config(config), history=max(1, len(events)))
    device = PersonalRanker(cast(Any, None), home, POOLED_USER, config.ranker_name, learner=learner)
    copy_events(events, device.store, POOLED_USER)
    report = device.learn()
    if not report.updated:
        raise RuntimeError(f"the pooled learner learned nothing from {len(events)} events")
    model = device.registry.load_model(POOLED_USER, config.ranker_name)
    weights = device.registry.load_weights(POOLED_USER, config.ranker_name) or b""
    return GlobalRanker(model, weights, device, len(events))
