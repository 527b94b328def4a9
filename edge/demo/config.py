"""The demo's settings: one dataclass, every size a `ranker-edge demo` option."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge._errors import ConfigError
from edge.demo.tasks import ASSISTANT_PROMPTS

__all__ = ["DEMO_PARTS", "DemoConfig", "DemoPart", "LearnerKind"]

DemoPart = Literal["correctness", "personalization"]  # a part of the demo (not of a candidate)
LearnerKind = Literal["taste", "list", "point"]
DEMO_PARTS: tuple[DemoPart, ...] = ("correctness", "personalization")


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and settings of the demo; the defaults are sized for 6 minutes on 2 idle cores.

    Here a K=8 generation takes about 1.5 s at 12 tokens and 4 s at 32 (SmolLM2-135M,
    2 threads), so the prompt counts set the time. Measured offline on SmolLM2 pools,
    the torch-free learner reaches 55 / 53 / 59 / 62 % on "which number is larger?"
    after 32 / 48 / 64 / 96 training prompts (best free baseline 42 %), and after 50
    events on 24 prompts the taste users agree with their own taste on 30-75 %
    ("concise") and 30-55 % ("detailed") of held-out prompts, first sample 5-25 %.
    """

    central: str | None = None  # address of a running central; None starts one
    token: str | None = None  # bearer token for a running central (None: no auth)
    tls: bool = False  # TLS to a running central (system roots unless root_certificates)
    root_certificates: str | None = None  # PEM file of a private CA for that TLS
    model: str = "default"  # model a started central serves
    k: int = 8  # candidates per prompt, in both parts
    temperature: float = 1.0  # sampling temperature; diversity is what a ranker needs
    # candidate 0 is the model's greedy answer, the rest sampled (SamplingParams.greedy_first):
    # a ranker can then keep the model's best single guess where nothing sampled beats it
    greedy_first: bool = True
    seed: int = 0  # seeds prompts, sampling, the simulated users and training
    home: Path | None = None  # where feedback and rankers go; None: a temporary directory
    parts: tuple[DemoPart, ...] = DEMO_PARTS  # which parts of the demo run

    # The correctness part: "which number is larger?", answers marked right or wrong.
    train_prompts: int = 48  # prompts in the feedback stream (K thumbs each)
    test_prompts: int = 48  # held-out prompts, disjoint from the training ones
    learn_every: int = 8  # prompts between incremental updates
    max_new_tokens: int = 12  # the task wants a short answer
    kind: LearnerKind = "taste"  # torch-free head; "list"/"point": a whole torch ranker

    # The personalization part: two users with opposite tastes on the same prompts.
    taste_prompts: int = 24  # prompts both users give feedback on
    taste_test_prompts: int = 20  # held-out prompts their rankers are scored on
    taste_events: int = 50  # feedback events per user (prompts reused when fewer)
    taste_learn_every: int = 1  # events between a user's updates (each takes milliseconds)
    taste_max_new_tokens: int = 32  # room for a sentence; about half the answers end sooner
    taste_noise: float = 0.1  # probability that a simulated reaction is random

    def __post_init__(self) -> None:
        """Refuses sizes the demo cannot run, naming the ``ranker-edge demo`` option."""
        at_least = {
            "k": (self.k, 2),
            "train-prompts": (self.train_prompts, 1),
            "test-prompts": (self.test_prompts, 1),
            "learn-every": (self.learn_every, 1),
            "max-new-tokens": (self.max_new_tokens, 1),
            "taste-prompts": (self.taste_prompts, 1),
            "taste-test-prompts": (self.taste_test_prompts, 1),
            "taste-events": (self.taste_events, 1),
            "taste-learn-every": (self.taste_learn_every, 1),
            "taste-max-new-tokens": (self.taste_max_new_tokens, 1),
        }
        for option, (value, low) in at_least.items():
            if value < low:
                raise ConfigError(f"--{option} must be at least {low}, got {value}")
        if self.taste_prompts + self.taste_test_prompts > len(ASSISTANT_PROMPTS):
            raise ConfigError(
                f"--taste-prompts + --taste-test-prompts must be at most "
                f"{len(ASSISTANT_PROMPTS)} (the demo's prompts), got "
                f"{self.taste_prompts} + {self.taste_test_prompts}"
            )
        if not 0.0 <= self.taste_noise <= 1.0:
            raise ConfigError(f"--taste-noise must be in [0, 1], got {self.taste_noise}")
        if not self.parts or not set(self.parts) <= set(DEMO_PARTS):
            raise ConfigError(f"parts must be among {DEMO_PARTS}, got {self.parts}")
