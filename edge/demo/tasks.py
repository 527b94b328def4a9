"""Small tasks whose answers a program can check, for the demo's simulated user.

The default model (SmolLM2-135M-Instruct) is weak, so the tasks are chosen
for headroom: the first sample is often wrong while some of K samples are
right, which is exactly where a ranker can help.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Problem", "first_number", "larger_number", "make_problems", "split_problems"]

_NUMBER = re.compile(r"-?\d+")


@dataclass(frozen=True)
class Problem:
    """One prompt and the program that judges a response to it."""

    prompt: str  # what the app sends to central
    answer: str  # the expected answer, for display
    check: Callable[[str], bool]  # True when a response is right


def first_number(text: str) -> int | None:
    """The first integer in `text` (thousands separators ignored), or None."""
    match = _NUMBER.search(text.replace(",", ""))
    return int(match.group()) if match else None


def larger_number(rng: random.Random) -> Problem:
    """'Which number is larger, a or b?': right when the first number named is the larger."""
    a, b = rng.sample(range(10, 100), 2)
    answer = max(a, b)
    return Problem(
        prompt=f"Which number is larger, {a} or {b}? Reply with only the number.",
        answer=str(answer),
        check=lambda text: first_number(text) == answer,
    )


def make_problems(count: int, seed: int) -> list[Problem]:
    """`count` distinct problems from a seeded generator (disjoint seeds, disjoint sets)."""
    rng = random.Random(seed)
    problems: dict[str, Problem] = {}
    while len(problems) < count:
        problem = larger_number(rng)
        problems.setdefault(problem.prompt, problem)
    return list(problems.values())


def split_problems(train: int, test: int, seed: int) -> tuple[list[Problem], list[Problem]]:
    """Train and test problems with no prompt in common."""
    pool = make_problems(train + test, seed)
    return pool[:train], pool[train:]
