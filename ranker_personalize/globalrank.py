"""The pooled baseline: one global ranker trained on every user's feedback.

This is what a server would do if users uploaded their feedback: read each
user's store, pool the events, train one ranker with the same edge trainer and
settings, export it to ONNX and publish it as the registry's *global* ranker.
It is also what a new user's ranker can start from (cold start).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge.app.checkpoint import Checkpoint
from edge.app.personal import STORE_FILE
from edge.app.registry import Registry
from edge.app.store import FeedbackEvent, FeedbackStore, events_to_dataset
from edge.runtime.scoring import Ranker
from edge.training.export import export_onnx
from edge.training.loop import train
from edge.training.rankers import build_ranker, make_config
from ranker_personalize.simulate import SimConfig, learner_config

__all__ = ["GlobalRanker", "collect_events", "train_global"]


@dataclass(frozen=True)
class GlobalRanker:
    """A trained global ranker: weights to start from and an ONNX runtime to rank with."""

    checkpoint: Checkpoint  # what a new user's Learner starts from
    ranker: Ranker  # onnxruntime session loaded from the registry
    events: int  # pooled feedback events it was trained on


def collect_events(
    homes: Sequence[tuple[Path, str]], per_user: int, task: str
) -> list[FeedbackEvent]:
    """The first ``per_user`` events of each (home, user), read from each user's own store."""
    pooled: list[FeedbackEvent] = []
    for home, user in homes:
        with FeedbackStore(home / STORE_FILE) as store:
            pooled += store.events(user, task=task)[:per_user]
    return pooled


def train_global(
    events: list[FeedbackEvent], registry_root: Path, config: SimConfig, seed: int
) -> GlobalRanker:
    """Train a fresh ranker on pooled events and publish it as the registry's global one."""
    settings = learner_config(config, seed)
    data = events_to_dataset(events, unlabelled=settings.unlabelled)
    model = build_ranker(make_config(settings.kind, data.feature_size), seed=seed)
    train(model, data, settings.train)
    checkpoint = model.to_checkpoint()
    onnx_bytes = export_onnx(model, exporter=settings.exporter)
    registry = Registry(registry_root)
    registry.save_global(config.ranker_name, onnx_bytes, weights=checkpoint.to_bytes())
    ranker = registry.open(None, config.ranker_name)
    return GlobalRanker(checkpoint, ranker, len(events))
