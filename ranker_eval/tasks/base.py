"""What a task is: problems with a prompt per model style and a programmatic checker.

Every family answers the same three questions (how to ask, how to read the
answer out of a response, whether it is right), so generation, caching and
the methods never need to know which family they are looking at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Problem:
    """One problem instance; everything needed to prompt and to check."""

    uid: str  # stable id, unique within the task (used as cache file name)
    question: str  # the user-facing question, without few-shot scaffolding
    answer: str  # the reference answer (or a task id for code)
    meta: dict[str, str] = field(default_factory=dict)  # task-specific extras (tests, entry point)


class Task(Protocol):
    """A family of problems with programmatic labels."""

    name: str  # short id used on the command line and in the cache
    max_new_tokens: int  # response budget that fits a right answer with some slack
    temperature: float  # sampling temperature that leaves headroom on the small models
    stop: tuple[str, ...]  # cut raw-prompt (base model) responses at the first of these

    def problems(self, count: int, seed: int) -> list[Problem]:
        """`count` distinct problems; the same seed always gives the same list."""
        ...

    def prompt(self, problem: Problem, chat: bool) -> str:
        """Prompt text: an instruction for chat models, a few-shot prefix for base models."""
        ...

    def extract(self, problem: Problem, response: str) -> str:
        """The normalised answer in `response` ('' when none); self-consistency votes on it."""
        ...

    def is_correct(self, problem: Problem, response: str) -> bool:
        """Programmatic label of one response."""
        ...


def split_problems(problems: list[Problem], n_train: int) -> tuple[list[Problem], list[Problem]]:
    """Train/test split by position; the generators never repeat a problem, so they are disjoint."""
    return problems[:n_train], problems[n_train:]
