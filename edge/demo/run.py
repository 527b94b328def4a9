"""The end-to-end demo: start central, then the correctness and personalization parts.

``run_demo`` starts (or connects to) one central service with the default
model and runs, against it:

1. the correctness part (``edge.demo.correctness``): a simulated user marks
   answers to "which number is larger?" right or wrong; the learned ranker is
   compared with the first sample and the free baselines on held-out prompts;
2. the personalization part (``edge.demo.personalization``): two simulated
   users with opposite tastes teach one ranker each from the same prompts;
   each ranker is scored on both tastes on held-out prompts.

Feedback and rankers of both parts live in one home (a temporary directory
unless one is given), as one app's would.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.demo.common import PhaseTimer
from edge.demo.config import DemoConfig
from edge.demo.correctness import CorrectnessResult, run_correctness
from edge.demo.launch import local_central
from edge.demo.personalization import PersonalizationResult, run_personalization
from edge.runtime.client import CentralClient

__all__ = ["DemoResult", "run_demo"]


@dataclass
class DemoResult:
    """What the demo measured; `as_json()` is what `--json` prints."""

    model: str  # the model central served
    k: int  # candidates per prompt
    correctness: CorrectnessResult | None  # None when that part did not run
    personalization: PersonalizationResult | None  # None when that part did not run
    phase_seconds: dict[str, float]  # wall time of each phase, in the order they ran
    total_seconds: float  # wall time of the whole demo, central's start included

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "k": self.k,
            "correctness": self.correctness.as_json() if self.correctness else None,
            "personalization": self.personalization.as_json() if self.personalization else None,
            "phase_seconds": self.phase_seconds,
            "total_seconds": self.total_seconds,
        }


def run_demo(config: DemoConfig, log: Callable[[str], None] = print) -> DemoResult:
    """Runs the parts `config.parts` names and returns the measurements."""
    started = time.perf_counter()
    timer = PhaseTimer()
    home = config.home or Path(tempfile.mkdtemp(prefix="ranker-demo-"))
    correctness = personalization = None
    with (
        _central(config, timer) as address,
        CentralClient(
            address,
            token=config.token,
            tls=config.tls or config.root_certificates is not None,
            root_certificates=config.root_certificates,
        ) as central,
    ):
        info = central.info()
        log(f"central: {info.model_name} ({info.num_layers} layers, {info.hidden_size}-d features)")
        if "correctness" in config.parts:
            log("correctness: a user marks answers to 'which number is larger?' right or wrong")
            correctness = run_correctness(central, home, config, timer, log)
        if "personalization" in config.parts:
            log("personalization: two users with opposite tastes, one ranker each")
            personalization = run_personalization(central, home, config, timer, log)
    return DemoResult(
        model=info.model_name,
        k=config.k,
        correctness=correctness,
        personalization=personalization,
        phase_seconds=timer.seconds,
        total_seconds=round(time.perf_counter() - started, 2),
    )


@contextmanager
def _central(config: DemoConfig, timer: PhaseTimer) -> Iterator[str]:
    if config.central:
        yield config.central
        return
    started = time.perf_counter()
    with local_central(config.model) as address:
        timer.seconds["start central"] = round(time.perf_counter() - started, 2)
        yield address
