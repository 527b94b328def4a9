"""Shared helpers for the benchmark scripts (not a benchmark itself).

The machine these run on is shared and noisy, so every script compares
variants measured in the same process, interleaved repetition by
repetition, and reports medians and ratios of medians.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Run as `python benchmarks/<name>.py` from anywhere: make the repo importable.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PROMPT = "Write a short poem about the sea."  # 38 tokens with SmolLM2's chat template
LONG_PROMPT = (
    "You are given a math competition problem. Read it carefully, reason step by step, "
    "and put the final answer in a box. Problem: A bag contains 5 red marbles, 7 blue "
    "marbles and 8 green marbles. Three marbles are drawn at random without replacement. "
    "What is the probability that the three marbles are all of different colours? "
    "Express your answer as a common fraction. Before answering, restate the problem in "
    "your own words, list the quantities involved, say which counting principle applies, "
    "and check your final fraction by a second method such as complementary counting. "
    "Keep the explanation short and precise, and do not skip the check."
)


def base_parser(description: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared 2-core machine one thread is both "
        "faster and steadier than two; 0 keeps torch's default)",
    )
    return parser


def set_threads(threads: int) -> int:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def load_default(no_eos: bool = True, weights: str = "auto") -> Any:
    """The real default model; with `no_eos` no response ends early, so lengths are fixed.

    `weights` as `ranker-central --weights` (auto: int8 on a CPU where it works).
    """
    from central.model import load_model

    loaded = load_model("default", weights=weights)
    return dataclasses.replace(loaded, eos_token_ids=frozenset()) if no_eos else loaded


def prompt_ids(loaded: Any, text: str = PROMPT) -> list[int]:
    from central.prompting import render_prompt
    from language_ranker.v1 import ranker_pb2 as pb

    return render_prompt(loaded, pb.Prompt(text=text))


def interleaved(
    variants: dict[str, Callable[[], object]],
    reps: int,
    warmup: bool = True,
    cpu: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Seconds per run of each variant, runs interleaved (order rotated every repetition).

    `cpu`, when given, receives each run's CPU seconds (this process, all its
    threads): with one torch thread, what the run cost without the time the
    other tenants of a shared machine held the core.
    """
    names = list(variants)
    if warmup:
        for name in names:
            variants[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            started, started_cpu = time.perf_counter(), time.process_time()
            variants[name]()
            seconds[name].append(time.perf_counter() - started)
            if cpu is not None:
                cpu.setdefault(name, []).append(time.process_time() - started_cpu)
    return seconds


def median(values: list[float]) -> float:
    return statistics.median(values)


def emit(result: dict[str, Any]) -> None:
    """The final machine-readable line every benchmark prints."""
    print(json.dumps(result, sort_keys=True), flush=True)
