"""The demo's personalization part: two users with opposite tastes, one ranker each.

Both simulated users (``edge.demo.users``: "concise" likes the fewest words,
"detailed" the most) see the same K answers to the same open-ended prompts.
Each gives a few dozen feedback events (thumbs on the answer shown first, or
picks among two or three shown), and after each event their own
``PersonalRanker`` learns, torch-free, in milliseconds. Then on held-out
prompts, for each user: how often their ranker's top answer is one their taste
prefers, against the first sample, a random pick and the *other* user's
ranker; and how often the two rankers' top answers differ. A single shared
ranker could please at most one of them on every prompt where the answers
differ in length; two personal rankers can please both.

A third user, "hedged", likes answers that hedge: a taste about what an answer
*says*, which no on-device signal computes (the lexicon part of the
representation has a category for it). It learns on the same prompts and is
scored on its own taste against the first sample and a random pick.

Phases, each timed: sample the prompts once (shared by every user), feed
each user's stream and learn, rank the held-out prompts.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.app.personal import PersonalRanker, Shown
from edge.demo.common import Accuracy, PhaseTimer, first_sampled, paired_gain, sample_many
from edge.demo.config import DemoConfig
from edge.demo.tasks import split_assistant_prompts
from edge.demo.users import JUDGES, Reaction, TasteUser, agreement, expected_random_agreement
from edge.runtime.client import CentralClient
from edge.runtime.types import Generation

__all__ = [
    "ContentFigures",
    "PersonalizationResult",
    "UserFigures",
    "content_user",
    "demo_users",
    "run_personalization",
]

RANKER_NAME = "assistant"


@dataclass
class UserFigures:
    """One simulated user's held-out figures: agreement of each picker with a taste."""

    user: str  # the user's id, also the name of their taste
    other: str  # the other simulated user
    events: int  # feedback events this user gave
    ranker_versions: int  # versions their learner saved
    update_ms_p50: float  # median wall time of one update (fit, compose, save, swap)
    # Agreement with this user's own taste: "first sample", "random pick",
    # "personal ranker" and "other user's ranker".
    own_taste: dict[str, Accuracy]
    # Agreement with the other user's taste: "first sample", "random pick", "personal ranker".
    other_taste: dict[str, Accuracy]
    gain_over_first: dict[str, Any]  # personal minus first sample on own taste, paired
    gain_over_other_ranker: dict[str, Any]  # personal minus the other's ranker on own taste

    def as_json(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "other": self.other,
            "events": self.events,
            "ranker_versions": self.ranker_versions,
            "update_ms_p50": self.update_ms_p50,
            "own_taste": {_key(name): acc.as_json() for name, acc in self.own_taste.items()},
            "other_taste": {_key(name): acc.as_json() for name, acc in self.other_taste.items()},
            "gain_over_first": self.gain_over_first,
            "gain_over_other_ranker": self.gain_over_other_ranker,
        }


@dataclass
class ContentFigures:
    """The content user's held-out figures: agreement of each picker with their taste."""

    user: str  # the user's id, also the name of their taste
    events: int  # feedback events this user gave
    ranker_versions: int  # versions their learner saved
    update_ms_p50: float  # median wall time of one update (fit, compose, save, swap)
    taste: dict[str, Accuracy]  # "first sample", "random pick", "personal ranker"
    gain_over_first: dict[str, Any]  # personal minus first sample, paired

    def as_json(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "events": self.events,
            "ranker_versions": self.ranker_versions,
            "update_ms_p50": self.update_ms_p50,
            "taste": {_key(name): acc.as_json() for name, acc in self.taste.items()},
            "gain_over_first": self.gain_over_first,
        }


@dataclass
class PersonalizationResult:
    """What the personalization part measured."""

    train_prompts: int  # prompts both users gave feedback on
    test_prompts: int  # held-out prompts both rankers are scored on
    max_new_tokens: int  # answer budget per candidate
    users: list[UserFigures]  # one per simulated user
    picks_differ: float  # share of held-out prompts where the users' rankers pick differently
    content: ContentFigures  # the user with a content taste

    def as_json(self) -> dict[str, Any]:
        return {
            "train_prompts": self.train_prompts,
            "test_prompts": self.test_prompts,
            "max_new_tokens": self.max_new_tokens,
            "users": [figures.as_json() for figures in self.users],
            "picks_differ": self.picks_differ,
            "content": self.content.as_json(),
        }


def _key(name: str) -> str:
    """A method's table name as a JSON key: "other user's ranker" -> "other_users_ranker"."""
    return name.replace("'", "").replace(" ", "_")


def demo_users(noise: float) -> tuple[TasteUser, TasteUser]:
    """The two users with opposite tastes."""
    return TasteUser("concise", "concise", noise), TasteUser("detailed", "detailed", noise)


def content_user(noise: float) -> TasteUser:
    """The user with a content taste: answers that hedge."""
    return TasteUser("hedged", "hedged", noise)


def run_personalization(
    central: CentralClient,
    home: Path,
    config: DemoConfig,
    timer: PhaseTimer,
    log: Callable[[str], None],
) -> PersonalizationResult:
    """Runs the personalization part's phases against `central`, storing under `home`."""
    train_prompts, test_prompts = split_assistant_prompts(
        config.taste_prompts, config.taste_test_prompts, config.seed
    )

    def draw(prompts: Sequence[str], first_seed: int) -> list[Generation]:
        seeds = range(first_seed, first_seed + len(prompts))
        return sample_many(
            central, prompts, seeds, config, max_new_tokens=config.taste_max_new_tokens
        )

    with timer.phase("personalization: sample prompts"):
        train = draw(train_prompts, 20_000)
        test = draw(test_prompts, 30_000)
    users = demo_users(config.taste_noise)
    content = content_user(config.taste_noise)
    rankers: dict[str, PersonalRanker] = {}
    learn_ms: dict[str, list[float]] = {}
    try:
        with timer.phase("personalization: feedback + learning"):
            for index, user in enumerate((*users, content)):
                ranker = PersonalRanker(central, home, user.name, RANKER_NAME)
                rankers[user.name] = ranker
                rng = np.random.default_rng([config.seed, index])
                learn_ms[user.name] = _teach(user, ranker, train, config, rng)
                log(
                    f"  {user.name}: {config.taste_events} events, ranker v{ranker.version}, "
                    f"update {statistics.median(learn_ms[user.name] or [0.0]):.1f} ms (median)"
                )
        with timer.phase("personalization: rank held-out"):
            picks = {name: [int(r.rank(g).order[0]) for g in test] for name, r in rankers.items()}
        versions = {name: r.version or 0 for name, r in rankers.items()}
    finally:
        for ranker in rankers.values():
            ranker.close()
    answer_sets = [g.texts for g in test]
    figures = [
        _figures(user, other, picks, answer_sets, config, versions, learn_ms)
        for user, other in (users, users[::-1])
    ]
    a, b = (picks[u.name] for u in users)
    differ = sum(x != y for x, y in zip(a, b, strict=True)) / len(a) if a else float("nan")
    return PersonalizationResult(
        train_prompts=len(train),
        test_prompts=len(test),
        max_new_tokens=config.taste_max_new_tokens,
        users=figures,
        picks_differ=differ,
        content=_content_figures(content, picks, answer_sets, config, versions, learn_ms),
    )


def _teach(
    user: TasteUser,
    ranker: PersonalRanker,
    train: Sequence[Generation],
    config: DemoConfig,
    rng: np.random.Generator,
) -> list[float]:
    """The user's feedback stream: show ranked, react, learn; the update times in ms."""
    learn_ms: list[float] = []
    for event in range(config.taste_events):
        generation = train[event % len(train)]
        shown = ranker.show(generation)
        _record(ranker, shown, user.react(generation.texts, shown.order, rng))
        if (event + 1) % config.taste_learn_every == 0 or event + 1 == config.taste_events:
            report = ranker.learn()
            learn_ms.append(round(report.seconds * 1000, 2))
    return learn_ms


def _record(ranker: PersonalRanker, shown: Shown, reaction: Reaction) -> None:
    if reaction.kind == "pick":
        ranker.pick(shown, reaction.candidate, reaction.rejected)
    else:
        ranker.thumbs(shown, reaction.candidate, up=reaction.up)


def _content_figures(
    user: TasteUser,
    picks: dict[str, list[int]],
    answer_sets: list[list[str]],
    config: DemoConfig,
    versions: dict[str, int],
    learn_ms: dict[str, list[float]],
) -> ContentFigures:
    """Agreement of the first sample, a random pick and the user's ranker with their taste."""
    judge = JUDGES[user.judge]
    first = agreement([first_sampled(config.greedy_first)] * len(answer_sets), answer_sets, judge)
    personal = agreement(picks[user.name], answer_sets, judge)
    share = expected_random_agreement(answer_sets, judge)
    return ContentFigures(
        user=user.name,
        events=config.taste_events,
        ranker_versions=versions[user.name],
        update_ms_p50=statistics.median(learn_ms[user.name]) if learn_ms[user.name] else 0.0,
        taste={
            "first sample": Accuracy.of(first),
            "random pick": Accuracy(share * len(answer_sets), len(answer_sets)),
            "personal ranker": Accuracy.of(personal),
        },
        gain_over_first=paired_gain(personal, first, seed=config.seed),
    )


def _figures(
    user: TasteUser,
    other: TasteUser,
    picks: dict[str, list[int]],
    answer_sets: list[list[str]],
    config: DemoConfig,
    versions: dict[str, int],
    learn_ms: dict[str, list[float]],
) -> UserFigures:
    """Agreement of each picker with `user`'s taste and with `other`'s."""
    first = [first_sampled(config.greedy_first)] * len(answer_sets)

    def agree(chosen: Sequence[int], judge: str) -> list[bool]:
        return agreement(chosen, answer_sets, JUDGES[judge])

    def random_pick(judge: str) -> Accuracy:
        share = expected_random_agreement(answer_sets, JUDGES[judge])
        return Accuracy(share * len(answer_sets), len(answer_sets))

    own, personal = user.judge, picks[user.name]
    return UserFigures(
        user=user.name,
        other=other.name,
        events=config.taste_events,
        ranker_versions=versions[user.name],
        update_ms_p50=statistics.median(learn_ms[user.name]) if learn_ms[user.name] else 0.0,
        own_taste={
            "first sample": Accuracy.of(agree(first, own)),
            "random pick": random_pick(own),
            "personal ranker": Accuracy.of(agree(personal, own)),
            "other user's ranker": Accuracy.of(agree(picks[other.name], own)),
        },
        other_taste={
            "first sample": Accuracy.of(agree(first, other.judge)),
            "random pick": random_pick(other.judge),
            "personal ranker": Accuracy.of(agree(personal, other.judge)),
        },
        gain_over_first=paired_gain(agree(personal, own), agree(first, own), seed=config.seed),
        gain_over_other_ranker=paired_gain(
            agree(personal, own), agree(picks[other.name], own), seed=config.seed
        ),
    )
