"""Task families with programmatic labels, by name."""

from __future__ import annotations

from ranker_eval.tasks.arithmetic import ArithmeticTask
from ranker_eval.tasks.base import Problem, Task, split_problems
from ranker_eval.tasks.function_calling import FunctionCallingTask
from ranker_eval.tasks.humaneval import HumanEvalTask
from ranker_eval.tasks.sentiment import SentimentTask

__all__ = ["TASKS", "Problem", "Task", "get_task", "split_problems"]

# The generated families first: they carry the comparison; code is last and smallest.
TASKS: dict[str, type] = {
    "math": ArithmeticTask,
    "function": FunctionCallingTask,
    "sentiment": SentimentTask,
    "code": HumanEvalTask,
}


def get_task(name: str) -> Task:
    """A task instance by name."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}, expected one of {sorted(TASKS)}")
    return TASKS[name]()
