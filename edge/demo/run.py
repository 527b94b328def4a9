"""The end-to-end demo: one simulated user teaches a personal ranker.

Phases, each timed:
1. start (or connect to) central with the default model;
2. sample K candidates for held-out test prompts; score the first sample,
   a random pick, the highest-likelihood pick and the oracle on them;
3. a training stream: for each prompt the app shows K candidates, the
   simulated user marks each right or wrong (a program checks the answer),
   and every `learn_every` prompts the ranker learns incrementally (train
   on CPU, export to ONNX, hot-swap in onnxruntime);
4. rank the same held-out candidates with the learned ranker.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.app.personal import PersonalRanker
from edge.demo.launch import local_central
from edge.demo.tasks import Problem, split_problems
from edge.eval.stats import paired_difference, wilson
from edge.runtime.client import CentralClient
from edge.runtime.types import Generation

__all__ = ["Accuracy", "DemoConfig", "DemoResult", "paired_gain", "run_demo"]

USER = "demo-user"
RANKER_NAME = "larger-number"


@dataclass
class DemoConfig:
    """Sizes and settings of the demo; the defaults finish in a few minutes on 2 cores."""

    central: str | None = None  # address of a running central; None starts one
    model: str = "default"  # model a started central serves
    k: int = 8  # candidates per prompt
    train_prompts: int = 256  # prompts in the feedback stream
    test_prompts: int = 64  # held-out prompts, disjoint from the training ones
    learn_every: int = 32  # prompts between incremental updates
    max_new_tokens: int = 12  # the task wants a short answer
    temperature: float = 1.0  # sampling temperature; diversity is what a ranker needs
    kind: str = "list"  # ranker kind: "list" or "point"
    seed: int = 0  # seeds problems, sampling and training
    home: Path | None = None  # where feedback and rankers go; None: a temporary directory


@dataclass
class Accuracy:
    """Share of prompts whose chosen answer is right, with a 95% Wilson interval."""

    correct: int
    total: int
    low: float = field(init=False)
    high: float = field(init=False)

    def __post_init__(self) -> None:
        self.low, self.high = wilson(self.correct, self.total)

    @property
    def rate(self) -> float:
        return self.correct / self.total if self.total else math.nan


@dataclass
class DemoResult:
    """What the demo measured; `as_json()` is what `--json` prints."""

    model: str
    k: int
    train_prompts: int
    test_prompts: int
    feedback_events: int
    methods: dict[str, Accuracy]
    phase_seconds: dict[str, float]
    learn_seconds: list[float]
    ranker_versions: int
    # Learned ranker minus first sample, paired over the same held-out prompts,
    # with a 95% bootstrap interval: the claim the demo makes.
    gain_over_first: dict[str, float | list[float]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["methods"] = {
            name: {"accuracy": acc.rate, "correct": acc.correct, "total": acc.total,
                   "ci95": [acc.low, acc.high]}
            for name, acc in self.methods.items()
        }  # fmt: skip
        return out


def paired_gain(
    chosen: Sequence[bool], baseline: Sequence[bool], *, seed: int = 0, resamples: int = 4000
) -> dict[str, float | list[float]]:
    """Mean accuracy difference on the same prompts, with a 95% paired bootstrap interval."""
    difference, low, high = paired_difference(
        np.asarray(chosen), np.asarray(baseline), resamples, seed
    )
    return {"difference": difference, "ci95": [low, high]}


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 2)


def run_demo(config: DemoConfig, log: Callable[[str], None] = print) -> DemoResult:
    """Runs all phases and returns the measurements."""
    timer = _Timer()
    train_set, test_set = split_problems(config.train_prompts, config.test_prompts, config.seed)
    with _central(config, timer) as address, CentralClient(address) as central:
        info = central.info()
        log(f"central: {info.model_name} ({info.num_layers} layers, {info.hidden_size}-d features)")
        with timer.phase("sample held-out candidates"):
            test = [_sample(central, p, config, seed=10_000 + i) for i, p in enumerate(test_set)]
        labels = [_labels(p, g) for p, g in zip(test_set, test, strict=True)]
        methods = _baselines(test, labels, config.seed)
        log(
            f"first-sample accuracy on {len(test)} held-out prompts: "
            f"{methods['first sample'].rate:.1%}"
        )

        home = config.home or Path(tempfile.mkdtemp(prefix="ranker-demo-"))
        user = PersonalRanker(central, home, USER, RANKER_NAME, learner=_learner_config(config))
        with timer.phase("feedback stream + learning"):
            events, learn_seconds = _feedback_stream(user, train_set, config, log)
        with timer.phase("rank held-out with learned ranker"):
            picks = [user.rank(g).best for g in test]
        methods["learned ranker (onnxruntime)"] = Accuracy(
            sum(lab[i] for lab, i in zip(labels, picks, strict=True)), len(test)
        )
        methods["oracle (any of K right)"] = Accuracy(sum(any(lab) for lab in labels), len(test))
        gain = paired_gain(
            [lab[i] for lab, i in zip(labels, picks, strict=True)],
            [lab[0] for lab in labels],
            seed=config.seed,
        )
        versions = user.version or 0
        user.close()
    return DemoResult(
        model=info.model_name,
        k=config.k,
        train_prompts=len(train_set),
        test_prompts=len(test_set),
        feedback_events=events,
        methods=methods,
        phase_seconds=timer.seconds,
        learn_seconds=learn_seconds,
        ranker_versions=versions,
        gain_over_first=gain,
    )


@contextmanager
def _central(config: DemoConfig, timer: _Timer) -> Iterator[str]:
    if config.central:
        yield config.central
        return
    started = time.perf_counter()
    with local_central(config.model) as address:
        timer.seconds["start central"] = round(time.perf_counter() - started, 2)
        yield address


def _sample(central: CentralClient, problem: Problem, config: DemoConfig, seed: int) -> Generation:
    return central.generate(
        problem.prompt,
        config.k,
        temperature=config.temperature,
        max_new_tokens=config.max_new_tokens,
        seed=seed,
    )


def _labels(problem: Problem, generation: Generation) -> list[bool]:
    return [problem.check(c.text) for c in generation.candidates]


def _baselines(
    test: Sequence[Generation], labels: Sequence[Sequence[bool]], seed: int
) -> dict[str, Accuracy]:
    rng = np.random.default_rng(seed)
    n = len(test)
    likeliest = [int(np.argmax([c.cumulative_logprob for c in g.candidates])) for g in test]
    random_pick = [int(rng.integers(len(g.candidates))) for g in test]
    return {
        "first sample": Accuracy(sum(lab[0] for lab in labels), n),
        "random pick": Accuracy(sum(lab[i] for lab, i in zip(labels, random_pick, strict=True)), n),
        "highest log-prob": Accuracy(
            sum(lab[i] for lab, i in zip(labels, likeliest, strict=True)), n
        ),
    }


def _learner_config(config: DemoConfig) -> Any:
    from edge.training.learner import LearnerConfig

    learner = LearnerConfig(kind=config.kind)  # type: ignore[arg-type]
    learner.train.seed = config.seed
    return learner


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
        shown = user.generate(
            problem.prompt, config.k, temperature=config.temperature,
            max_new_tokens=config.max_new_tokens, seed=i,
        )  # fmt: skip
        for candidate in shown.generation.candidates:
            user.thumbs(shown, candidate.index, up=problem.check(candidate.text))
            events += 1
        if i % config.learn_every == 0 or i == len(problems):
            report = user.learn()
            learn_seconds.append(round(report.seconds, 3))
            log(
                f"  after {i:3d} prompts: ranker v{user.version} "
                f"(loss {report.loss_before:.3f} -> {report.loss_after:.3f}, "
                f"{report.seconds:.2f} s)"
            )
    return events, learn_seconds
