"""The demo's correctness part: one simulated user teaches a ranker which answers are right.

Phases, each timed:
1. sample K candidates for held-out "which number is larger?" prompts (the
   greedy answer as candidate 0 unless ``--no-greedy-first``) and score what
   needs no training on them: the first sampled answer, a random pick, greedy
   decoding, the highest cumulative and the highest mean log-probability, and
   self-consistency (a majority vote over the numbers the answers name);
2. a training stream: for each prompt the app shows K candidates, the
   simulated user marks each right or wrong (a program checks the answer),
   and every `learn_every` prompts the ranker learns incrementally and is
   hot-swapped in onnxruntime;
3. rank the same held-out candidates with the learned ranker.

The claim is paired: the learned ranker against the first sample (what an app
shows without a ranker) and against the best of the free baselines, on the
same held-out prompts, each with a 95% bootstrap interval.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.app.learning import LearnerSpec
from edge.app.personal import PersonalRanker
from edge.demo.common import (
    Accuracy,
    PhaseTimer,
    first_sampled,
    paired_gain,
    sample,
    sample_many,
)
from edge.demo.config import DemoConfig, LearnerKind
from edge.demo.tasks import Problem, first_number, split_problems
from edge.runtime.client import CentralClient
from edge.runtime.types import Generation

__all__ = [
    "FREE_BASELINES",
    "CorrectnessResult",
    "free_picks",
    "run_correctness",
    "self_consistency_pick",
]

USER = "demo-user"
RANKER_NAME = "larger-number"
LEARNED = "learned ranker (onnxruntime)"
ORACLE = "oracle (any of K right)"
RANDOM = "random pick"
# The picks that need no training, the learned ranker's bar: the best of them.
FREE_BASELINES = (
    "first sample",
    "greedy decoding",
    "highest cumulative log-prob",
    "highest mean log-prob",
    "self-consistency (majority vote)",
)


@dataclass
class CorrectnessResult:
    """What the correctness part measured."""

    train_prompts: int  # prompts in the feedback stream
    test_prompts: int  # held-out prompts every method is scored on
    feedback_events: int  # thumbs recorded (K per training prompt)
    learner: LearnerKind  # "taste" (torch-free head) or a torch "list"/"point" ranker
    methods: dict[str, Accuracy]  # accuracy of each way of choosing one of K answers
    ranker_versions: int  # versions the learner saved
    learn_seconds: list[float]  # wall time of each incremental update
    # Learned ranker minus first sample, paired over the held-out prompts, with a
    # 95% bootstrap interval: what a ranker adds to an app.
    gain_over_first: dict[str, Any]
    # Learned ranker minus the best free baseline (named in "baseline"): whether
    # learning beats what costs nothing.
    gain_over_best_free: dict[str, Any]
    # Learned ranker minus each free baseline, paired, by baseline name.
    gain_over_each_free: dict[str, dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["methods"] = {name: acc.as_json() for name, acc in self.methods.items()}
        return out


def self_consistency_pick(texts: Sequence[str]) -> int:
    """The first answer naming the number most answers name (ties: the number named
    first); answer 0 when none names a number."""
    numbers = [first_number(text) for text in texts]
    votes = Counter(n for n in numbers if n is not None)
    if not votes:
        return 0
    top = max(votes.values())
    return next(i for i, n in enumerate(numbers) if n is not None and votes[n] == top)


def _mean_logprob(generation: Generation) -> list[float]:
    # An empty answer's mean over zero tokens is undefined (the SDK reads 0.0, the
    # highest possible): it is never the model's most confident answer.
    return [c.mean_logprob if c.token_ids else -math.inf for c in generation.candidates]


def free_picks(generation: Generation, greedy_first: bool = False) -> dict[str, int]:
    """The candidate each free baseline chooses (ties: the lowest index).

    With ``greedy_first`` candidate 0 is the greedy answer and the first sample is
    candidate 1; without it there is no greedy answer to pick."""
    greedy = {"greedy decoding": 0} if greedy_first else {}
    return {
        "first sample": first_sampled(greedy_first),
        **greedy,
        "highest cumulative log-prob": int(
            np.argmax([c.cumulative_logprob for c in generation.candidates])
        ),
        "highest mean log-prob": int(np.argmax(_mean_logprob(generation))),
        "self-consistency (majority vote)": self_consistency_pick(generation.texts),
    }


def run_correctness(
    central: CentralClient,
    home: Path,
    config: DemoConfig,
    timer: PhaseTimer,
    log: Callable[[str], None],
    learner: LearnerSpec | None = None,
) -> CorrectnessResult:
    """Runs the correctness part's phases against `central`; feedback and rankers go to `home`.
    ``learner``: the user's learner settings (default: ``config.kind``'s, the SDK's
    ``TasteConfig()`` for the taste head)."""
    train_set, test_set = split_problems(config.train_prompts, config.test_prompts, config.seed)
    with timer.phase("correctness: sample held-out"):
        test = sample_many(
            central,
            [p.prompt for p in test_set],
            [10_000 + i for i in range(len(test_set))],
            config,
            max_new_tokens=config.max_new_tokens,
        )
    labels = [[p.check(c.text) for c in g.candidates] for p, g in zip(test_set, test, strict=True)]
    hits = _free_hits(test, labels, config.greedy_first)
    log(f"first-sample accuracy on {len(test)} held-out prompts: {_rate(hits['first sample']):.1%}")

    learner = _learner_config(config) if learner is None else learner
    user = PersonalRanker(central, home, USER, RANKER_NAME, learner=learner)
    try:
        with timer.phase("correctness: feedback stream + learning"):
            events, learn_seconds = _feedback_stream(user, train_set, config, log)
        with timer.phase("correctness: rank held-out"):
            picks = [int(user.rank(g).order[0]) for g in test]
        versions = user.version or 0
    finally:
        user.close()
    hits[LEARNED] = [lab[i] for lab, i in zip(labels, picks, strict=True)]
    methods = {name: Accuracy.of(h) for name, h in hits.items()}
    methods[RANDOM] = Accuracy(sum(sum(lab) / len(lab) for lab in labels), len(labels))
    methods[ORACLE] = Accuracy.of([any(lab) for lab in labels])
    best = max((n for n in FREE_BASELINES if n in methods), key=lambda n: methods[n].rate)
    return CorrectnessResult(
        train_prompts=len(train_set),
        test_prompts=len(test_set),
        feedback_events=events,
        learner=config.kind,
        methods=_ordered(methods),
        ranker_versions=versions,
        learn_seconds=learn_seconds,
        gain_over_first=paired_gain(hits[LEARNED], hits["first sample"], seed=config.seed),
        gain_over_best_free={
            "baseline": best,
            **paired_gain(hits[LEARNED], hits[best], seed=config.seed),
        },
        gain_over_each_free={
            name: paired_gain(hits[LEARNED], hits[name], seed=config.seed)
            for name in FREE_BASELINES
            if name in hits
        },
    )


def _rate(hits: Sequence[bool]) -> float:
    return sum(hits) / len(hits) if hits else math.nan


def _free_hits(
    test: Sequence[Generation], labels: Sequence[list[bool]], greedy_first: bool
) -> dict[str, list[bool]]:
    """Per method, per held-out prompt: whether the free baseline's pick is right."""
    hits: dict[str, list[bool]] = {}
    for generation, lab in zip(test, labels, strict=True):
        for name, pick in free_picks(generation, greedy_first).items():
            hits.setdefault(name, []).append(lab[pick])
    return hits


def _ordered(methods: dict[str, Accuracy]) -> dict[str, Accuracy]:
    """The table's order: free picks, the learned ranker, the ceiling."""
    names = [FREE_BASELINES[0], RANDOM, *FREE_BASELINES[1:], LEARNED, ORACLE]
    return {name: methods[name] for name in names if name in methods}


def _learner_config(config: DemoConfig) -> Any:
    """None for the torch-free taste head (the SDK's default); a torch LearnerConfig
    for a whole list or point ranker per user."""
    if config.kind == "taste":
        return None
    from edge.training.learner import LearnerConfig

    default = LearnerConfig(kind=config.kind)
    return dataclasses.replace(default, train=dataclasses.replace(default.train, seed=config.seed))


def _feedback_stream(
    user: PersonalRanker,
    problems: Sequence[Problem],
    config: DemoConfig,
    log: Callable[[str], None],
) -> tuple[int, list[float]]:
    """Shows K candidates per prompt; the simulated user marks each right or wrong."""
    events = 0
    learn_seconds: list[float] = []
    for i, problem in enumerate(problems, start=1):
        generation = sample(
            user.central, problem.prompt, config, max_new_tokens=config.max_new_tokens, seed=i
        )
        shown = user.show(generation)
        for candidate in generation.candidates:
            user.thumbs(shown, candidate.index, up=problem.check(candidate.text))
            events += 1
        if i % config.learn_every == 0 or i == len(problems):
            report = user.learn()
            learn_seconds.append(round(report.seconds, 4))
            log(
                f"  after {i:3d} prompts: ranker v{user.version} "
                f"(loss {report.loss_before:.3f} -> {report.loss_after:.3f}, "
                f"{report.seconds:.3f} s)"
            )
    return events, learn_seconds
