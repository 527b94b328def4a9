"""The demo's correctness task replayed with several learner settings on the same candidates.

Clean, dense feedback: the demo's correctness user marks every one of the K
answers to "which number is larger?" right or wrong (``edge.demo.correctness``),
the opposite of the study's sparse, noisy reactions. A learner setting that
suits one regime can underfit the other (``TasteConfig.l2``: docs/taste-learner.md),
so this script scores settings on this regime. For each demo seed it starts
nothing new: one ``ranker-central serve`` (the default model) samples the
seed's train and held-out candidates once, through a client that remembers
them, and every setting then runs the demo's own feedback stream and ranking
on those candidates (each in its own fresh home). Printed: held-out accuracy of
the learned ranker per setting and seed, the best free baseline's, and the
mean over seeds of learned minus best free.

    python benchmarks/correctness_learners.py --seeds 0,1,2,3
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
from _common import ROOT  # noqa: F401  (importing it makes the repository importable)

from edge import CentralClient
from edge.app.taste import TasteConfig
from edge.demo.common import PhaseTimer
from edge.demo.config import DemoConfig
from edge.demo.correctness import FREE_BASELINES, LEARNED, run_correctness
from edge.demo.launch import local_central
from edge.runtime.types import Generation

_TWO_HEADS: tuple[dict[str, float], ...] = ({"signals": 100.0, "lexicon": 0.01}, {"last": 0.01})
SETTINGS: dict[str, Callable[[], TasteConfig]] = {
    "default": TasteConfig,
    "l2 1, two heads (before)": lambda: TasteConfig(l2=1.0, head_priors=_TWO_HEADS),
    "l2 10, two heads": lambda: TasteConfig(head_priors=_TWO_HEADS),
}


class RememberingCentral:
    """A central client that samples each (prompt, k, options) once: every setting
    then learns from the same candidates."""

    def __init__(self, client: CentralClient) -> None:
        self.client = client
        self.seen: dict[str, Generation] = {}

    def generate(self, prompt: str, k: int, **options: Any) -> Generation:
        key = json.dumps([prompt, k, options], sort_keys=True, default=str)
        if key not in self.seen:
            self.seen[key] = self.client.generate(prompt, k, **options)
        return self.seen[key]


def _scores(central: RememberingCentral, seed: int, setting: TasteConfig) -> tuple[float, float]:
    """Learned and best free accuracy on the seed's held-out prompts."""
    with tempfile.TemporaryDirectory() as home:
        result = run_correctness(
            cast(CentralClient, central), Path(home), DemoConfig(seed=seed), PhaseTimer(),
            lambda _line: None, learner=setting,
        )  # fmt: skip
    free = max(result.methods[name].rate for name in FREE_BASELINES if name in result.methods)
    return result.methods[LEARNED].rate, free


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3", help="demo seeds, comma-separated")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    table: dict[str, list[tuple[float, float]]] = {name: [] for name in SETTINGS}
    with local_central() as address:
        central = RememberingCentral(CentralClient(address))
        for seed in seeds:
            for name, make in SETTINGS.items():
                learned, free = _scores(central, seed, make())
                table[name].append((learned, free))
                print(f"seed {seed}  {name:28s} learned {learned:6.1%}  best free {free:6.1%}")
    print(f"\nmean over seeds {seeds} (held-out accuracy, 48 prompts a seed):")
    for name, rows in table.items():
        learned, free = np.mean(rows, axis=0)
        print(f"  {name:28s} learned {learned:6.1%}  best free {free:6.1%}  "
              f"learned - best free {learned - free:+.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
