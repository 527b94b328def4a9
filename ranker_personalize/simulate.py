"""One simulated user on one device, driven through the real edge SDK, torch-free.

Every event goes through the pieces an app ships: the generation is *shown*
(ranked by the user's current onnxruntime ranker and recorded in the user's own
SQLite FeedbackStore), the simulated user reacts (thumbs or pick), and
``PersonalRanker.learn`` runs the torch-free learner (``edge.app.personal_learner``:
fit the taste head, compose the ONNX ranker, save a registry version, hot-swap)
after every event, as an app would. Each user gets their own home directory:
their own store file and registry, as on separate phones. At each curve budget
the current ranker picks the top candidate of every held-out prompt; metrics
compare those picks to the judge.

A ``Session`` is one device stepping through its events, so two users can
share a home and take turns (the isolation check); ``run_user`` is a session
from the first event to the last budget.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from edge.app.learning import LearnReport
from edge.app.personal import PersonalRanker, Shown
from edge.app.taste import TasteConfig
from edge.runtime.lexicon import lexicon_block
from edge.runtime.signals import text_signals
from edge.runtime.types import Candidate, Generation
from ranker_personalize.pool import Pool
from ranker_personalize.users import Reaction, SimUser

__all__ = [
    "RunResult",
    "Session",
    "SimConfig",
    "generation",
    "pool_lexicon",
    "pool_parts",
    "pool_signals",
    "rank_pool",
    "record",
    "run_user",
    "taste_config",
]

UserAt = Callable[[int], SimUser]  # the user's taste at event n (1-based)


@dataclass(frozen=True)
class SimConfig:
    """How one simulated user's feedback session runs."""

    budgets: tuple[int, ...] = (0, 10, 25, 50, 100, 200)  # events after which the ranker is scored
    update_every: int = 1  # the app calls learn() every this many events (and at each budget)
    ranker_name: str = "chat"  # ranker / task name in the store and registry
    use_signals: bool = True  # the head reads the on-device signals block
    use_lexicon: bool = True  # the head reads the on-device lexicon block
    history: int = 1000  # newest events the learner refits on (TasteConfig.history)


def taste_config(config: SimConfig) -> TasteConfig:
    """The torch-free learner's settings: edge defaults but for the study's knobs."""
    return TasteConfig(
        use_signals=config.use_signals, use_lexicon=config.use_lexicon, history=config.history
    )


def generation(pool: Pool, i: int) -> Generation:
    """Prompt ``i`` of the pool as the edge client hands it to the app (representation v2).

    The pool keeps each candidate's token count, not its ids: a tuple of that
    length stands in, which is all the signals read.
    """
    cands = tuple(
        Candidate(
            k,
            pool.texts[i][k],
            (0,) * int(pool.num_tokens[i, k]),
            "eos" if pool.finished[i, k] else "length",
            float(pool.cumulative[i, k]),
            pool.candidates[i, k],
            mean_feature=pool.means[i, k],
            mean_entropy=float(pool.entropies[i, k]),
        )
        for k in range(pool.settings.k)
    )
    return Generation(pool.prompts[i], pool.instructions[i], cands, pool.settings.layer)


def pool_lexicon(pool: Pool) -> np.ndarray:
    """(P, K, C) on-device lexicon block of every prompt's candidates, as the store
    computes it."""
    return np.stack([lexicon_block(texts) for texts in pool.texts])


def pool_signals(pool: Pool) -> np.ndarray:
    """(P, K, S) on-device signals of every prompt's candidates, as the store computes them."""
    return np.stack(
        [
            text_signals(
                pool.texts[i],
                num_tokens=pool.num_tokens[i].tolist(),
                cumulative_logprobs=pool.cumulative[i].tolist(),
                mean_entropies=pool.entropies[i].tolist(),
                finish_reasons=["eos" if f else "length" for f in pool.finished[i]],
            )
            for i in range(len(pool))
        ]
    )


def pool_parts(pool: Pool) -> dict[str, np.ndarray]:
    """The on-device parts of every prompt's candidates (``signals``, ``lexicon``),
    computed once for every ranking of the pool."""
    return {"signals": pool_signals(pool), "lexicon": pool_lexicon(pool)}


def rank_pool(
    device: PersonalRanker, pool: Pool, parts: Mapping[str, np.ndarray] | None = None
) -> np.ndarray:
    """Top-1 pick of ``device``'s ranker for every prompt of ``pool`` (first sample: 0).

    The ranker ``device.rank`` uses (``PersonalRanker.ranker``), scored in one batch
    with the pool's on-device parts computed once (``pool_parts``) instead of once
    per prompt and call.
    """
    ranker = device.ranker
    if ranker is None:
        return np.zeros(len(pool), dtype=np.int64)
    parts = pool_parts(pool) if parts is None else parts
    scores = ranker.score_batch(
        pool.instructions,
        pool.candidates,
        mean_candidates=pool.means,
        signals=parts["signals"],
        lexicon=parts["lexicon"],
    )
    return np.argmax(scores, axis=1).astype(np.int64)  # ties: the lowest index, as rank()


def record(device: PersonalRanker, shown: Shown, reaction: Reaction) -> None:
    """Store a reaction the way the app's buttons would."""
    if reaction.kind == "thumb":
        device.thumbs(shown, reaction.candidate, up=reaction.up)
    else:
        device.pick(shown, reaction.candidate, list(reaction.rejected))


@dataclass
class RunResult:
    """What one user's session produced."""

    picks: dict[int, np.ndarray]  # budget -> top-1 pick per test prompt
    updates: list[LearnReport] = field(default_factory=list)  # every learn() report
    reactions: list[Reaction] = field(default_factory=list)  # the feedback given, in order


class Session:
    """One user's device stepping through feedback events on the train prompts.

    The prompts come in a seeded random order (a new permutation after each
    pass over them); the same seed's generator draws the reactions.
    """

    def __init__(
        self,
        user: SimUser | UserAt,
        train: Pool,
        home: Path,
        seed: int,
        config: SimConfig,
    ) -> None:
        self.user_at: UserAt = (lambda _e: user) if isinstance(user, SimUser) else user
        self.train, self.config = train, config
        self.rng = np.random.default_rng(seed)
        self.order = np.concatenate(
            [self.rng.permutation(len(train)) for _ in range(1 + max(config.budgets) // len(train))]
        )
        name = self.user_at(1).name
        self.device = PersonalRanker(
            cast(Any, None), home, name, config.ranker_name, learner=taste_config(config)
        )
        self.event = 0
        self.result = RunResult({})

    def step(self) -> None:
        """Show the next prompt, react, and learn when the app would."""
        self.event += 1
        gen = generation(self.train, int(self.order[self.event - 1]))
        shown = self.device.show(gen)
        reaction = self.user_at(self.event).react(gen.texts, shown.order, self.rng)
        record(self.device, shown, reaction)
        self.result.reactions.append(reaction)
        if self.event % self.config.update_every == 0 or self.event in self.config.budgets:
            report = self.device.learn()
            assert isinstance(report, LearnReport)  # the torch-free learner
            self.result.updates.append(report)

    def close(self) -> None:
        self.device.close()


def run_user(
    user: SimUser | UserAt,
    train: Pool,
    test: Pool,
    home: Path,
    seed: int,
    config: SimConfig,
    *,
    prelude: Callable[[PersonalRanker], None] | None = None,
    probe: Callable[[int, PersonalRanker], None] | None = None,
    test_parts: Mapping[str, np.ndarray] | None = None,
) -> RunResult:
    """Simulate ``max(budgets)`` feedback events; ``user`` may change with the event number.

    ``prelude`` runs on the device before the first event (e.g. a correctness
    task taught first); ``probe`` is called at every budget (e.g. a held-out
    skill check). A global ranker saved in ``home``'s registry is the offset of the
    user's head from the first update on; before it the first sample is shown
    (``PersonalRanker``'s cold start).
    """
    session = Session(user, train, home, seed, config)
    signals = pool_parts(test) if test_parts is None else test_parts
    try:
        if prelude is not None:
            prelude(session.device)
        session.result.picks[0] = rank_pool(session.device, test, signals)
        if probe is not None:
            probe(0, session.device)
        for event in range(1, max(config.budgets) + 1):
            session.step()
            if event in config.budgets:
                session.result.picks[event] = rank_pool(session.device, test, signals)
                if probe is not None:
                    probe(event, session.device)
        return session.result
    finally:
        session.close()
