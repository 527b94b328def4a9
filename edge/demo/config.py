"""The demo's settings: one dataclass, every size a `ranker-edge demo` option."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["PARTS", "DemoConfig", "LearnerKind", "Part"]

Part = Literal["correctness", "personalization"]
LearnerKind = Literal["taste", "list", "point"]
PARTS: tuple[Part, ...] = ("correctness", "personalization")


@dataclass
class DemoConfig:
    """Sizes and settings of the demo; the defaults finish in about 6 minutes on 2 cores."""

    central: str | None = None  # address of a running central; None starts one
    model: str = "default"  # model a started central serves
    k: int = 8  # candidates per prompt, in both parts
    temperature: float = 1.0  # sampling temperature; diversity is what a ranker needs
    seed: int = 0  # seeds prompts, sampling, the simulated users and training
    home: Path | None = None  # where feedback and rankers go; None: a temporary directory
    parts: tuple[Part, ...] = PARTS  # which parts run

    # The correctness part: "which number is larger?", answers marked right or wrong.
    train_prompts: int = 128  # prompts in the feedback stream (K thumbs each)
    test_prompts: int = 64  # held-out prompts, disjoint from the training ones
    learn_every: int = 16  # prompts between incremental updates
    max_new_tokens: int = 12  # the task wants a short answer
    kind: LearnerKind = (
        "taste"  # learner: "taste" (torch-free head), or a torch "list"/"point" ranker
    )

    # The personalization part: two users with opposite tastes on the same prompts.
    taste_prompts: int = 40  # prompts both users give feedback on
    taste_test_prompts: int = 30  # held-out prompts their rankers are scored on
    taste_events: int = 50  # feedback events per user (prompts reused when fewer)
    taste_learn_every: int = 1  # events between a user's updates (each takes milliseconds)
    taste_max_new_tokens: int = 48  # long enough for answers to differ in length and layout
    taste_noise: float = 0.1  # probability that a simulated reaction is random
