"""One simulated user on one device, driven through the real edge SDK.

Every event goes through the pieces an app ships: the generation is *shown*
(ranked by the user's current onnxruntime ranker and recorded in the user's own
SQLite FeedbackStore), the simulated user reacts (thumbs or pick), and every
``update_every`` events ``PersonalRanker.learn`` runs the edge Learner
(incremental update + replay -> ONNX export -> Registry version -> hot swap).
Each user gets their own home directory: their own store file and registry,
as on separate phones. At each curve budget the current ranker picks the top
candidate of every held-out prompt; metrics compare those picks to the judge.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from edge.app.checkpoint import Checkpoint
from edge.app.personal import PersonalRanker
from edge.runtime.scoring import Ranker, Ranking
from edge.runtime.types import Candidate, Generation
from edge.training.learner import LearnerConfig
from edge.training.loop import TrainConfig
from ranker_personalize.pool import Pool
from ranker_personalize.users import Reaction, SimUser

__all__ = [
    "Device",
    "RunResult",
    "SimConfig",
    "generation",
    "learner_config",
    "rank_pool",
    "run_user",
]


@dataclass
class SimConfig:
    """How one simulated user's feedback session runs."""

    budgets: tuple[int, ...] = (0, 10, 25, 50, 100, 200)  # events after which the ranker is scored
    update_every: int = 25  # the app calls learn() every this many events (and at each budget)
    ranker_name: str = "chat"  # ranker / task name in the store and registry
    kind: str = "list"  # ranker kind for a user starting from scratch
    replay_size: int = 256  # older events mixed into each update (edge default)
    min_steps: int = 30  # optimiser steps per update at least (edge default)
    lr: float = 3e-3  # AdamW learning rate (edge default)


def learner_config(config: SimConfig, seed: int) -> LearnerConfig:
    """The edge LearnerConfig of the study: edge defaults, seeded per run."""
    train = TrainConfig(min_steps=config.min_steps, batch_candidates=64, lr=config.lr, seed=seed)
    return LearnerConfig(kind=config.kind, train=train, replay_size=config.replay_size)  # type: ignore[arg-type]


def generation(pool: Pool, i: int) -> Generation:
    """Prompt ``i`` of the pool as the edge client would hand it to the app."""
    cands = tuple(
        Candidate(k, pool.texts[i][k], (), "eos" if pool.finished[i, k] else "length", 0.0, feat)
        for k, feat in enumerate(pool.candidates[i])
    )
    return Generation(pool.prompts[i], pool.instructions[i], cands, pool.settings.layer)


class Device(PersonalRanker):
    """A PersonalRanker that serves a base (global) ranker until its first own version.

    Without a base it is exactly PersonalRanker: index order (the first sample)
    until the first update.
    """

    def __init__(self, *args: Any, base_ranker: Ranker | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.base_ranker = base_ranker

    def rank(self, generation: Generation) -> Ranking:
        if self.version is None and self.base_ranker is not None:
            return self.base_ranker.rank(generation.instruction, generation.features)
        return super().rank(generation)


def rank_pool(rank: Callable[[Generation], Ranking], pool: Pool) -> np.ndarray:
    """Top-1 pick of ``rank`` for every prompt of ``pool``."""
    return np.array([rank(generation(pool, i)).best for i in range(len(pool))], dtype=np.int64)


@dataclass
class RunResult:
    """What one user's session produced."""

    picks: dict[int, np.ndarray]  # budget -> top-1 pick per test prompt
    learn_seconds: list[float] = field(default_factory=list)  # wall time of each learn()
    events_per_learn: list[int] = field(default_factory=list)  # new events in each update
    reactions: list[Reaction] = field(default_factory=list)  # the feedback given, in order


def _record(device: Device, shown: Any, reaction: Reaction) -> None:
    if reaction.kind == "thumb":
        device.thumbs(shown, reaction.candidate, up=reaction.up)
    else:
        device.pick(shown, reaction.candidate, list(reaction.rejected))


def run_user(
    user: SimUser | Callable[[int], SimUser],
    train: Pool,
    test: Pool,
    home: Path,
    seed: int,
    config: SimConfig,
    *,
    base: Checkpoint | None = None,
    base_ranker: Ranker | None = None,
    prelude: Callable[[Device], None] | None = None,
    probe: Callable[[int, Device], None] | None = None,
) -> RunResult:
    """Simulate ``max(budgets)`` feedback events; ``user`` may change with the event number.

    ``prelude`` runs on the device before the first event (e.g. prior task
    training); ``probe`` is called at every budget (e.g. a held-out skill check).
    """
    user_at = user if callable(user) and not isinstance(user, SimUser) else (lambda _e: user)
    first = cast(SimUser, user_at(1))
    rng = np.random.default_rng(seed)
    device = Device(
        cast(Any, None), home, first.name, config.ranker_name,
        learner=learner_config(config, seed), base=base, base_ranker=base_ranker,
    )  # fmt: skip
    try:
        if prelude is not None:
            prelude(device)
        result = RunResult({0: rank_pool(device.rank, test)})
        if probe is not None:
            probe(0, device)
        order = np.concatenate(
            [rng.permutation(len(train)) for _ in range(1 + max(config.budgets) // len(train))]
        )
        for event in range(1, max(config.budgets) + 1):
            gen = generation(train, int(order[event - 1]))
            shown = device.show(gen)
            reaction = cast(SimUser, user_at(event)).react(gen.texts, shown.order, rng)
            _record(device, shown, reaction)
            result.reactions.append(reaction)
            if event in config.budgets or event % config.update_every == 0:
                start = time.perf_counter()
                report = device.learn()
                result.learn_seconds.append(time.perf_counter() - start)
                result.events_per_learn.append(report.new_events)
            if event in config.budgets:
                result.picks[event] = rank_pool(device.rank, test)
                if probe is not None:
                    probe(event, device)
        return result
    finally:
        device.close()
