"""Math-style family: compare two numbers or add two small ones; the final number is checked.

Two-digit addition is too hard for a 135M model (first sample ~8%), so the
family mixes "which is larger" (first sample ~25%, oracle ~90%) with
single-digit addition, keeping the first sample inside the 15-70% band the
comparison needs while still checking an arithmetic answer.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from ranker_eval.tasks.base import Problem

_NUMBER = re.compile(r"-?\d+")
_SHOTS = (
    ("Which number is larger, 23 or 61?", "61"),
    ("What is 4 plus 3?", "7"),
    ("Which number is larger, 88 or 19?", "88"),
)


@dataclass(frozen=True)
class ArithmeticTask:
    """Checked final answers: the first integer in the response must equal the reference."""

    name: str = "math"  # task id
    max_new_tokens: int = 14  # a number plus a short lead-in
    temperature: float = 1.0  # sampling temperature for this family
    stop: tuple[str, ...] = ("\n",)  # base models: the answer is the first line

    def problems(self, count: int, seed: int) -> list[Problem]:
        rng = random.Random(seed)
        seen: set[str] = set()
        out: list[Problem] = []
        while len(out) < count:
            if rng.random() < 0.5:
                a, b = rng.sample(range(10, 100), 2)
                question, answer = f"Which number is larger, {a} or {b}?", str(max(a, b))
            else:
                a, b = rng.randint(2, 9), rng.randint(2, 9)
                question, answer = f"What is {a} plus {b}?", str(a + b)
            if question in seen:
                continue
            seen.add(question)
            out.append(Problem(uid=f"math-{len(out):04d}", question=question, answer=answer))
        return out

    def prompt(self, problem: Problem, chat: bool) -> str:
        if chat:
            return f"{problem.question} Reply with only the number."
        shots = "".join(f"Q: {q}\nA: {a}\n\n" for q, a in _SHOTS)
        return f"{shots}Q: {problem.question}\nA:"

    def extract(self, problem: Problem, response: str) -> str:
        # A comparison is answered by the first number ("74 is larger"); a sum by
        # the last one, since responses restate the operands ("3 + 4 = 7").
        numbers = _NUMBER.findall(response)
        if not numbers:
            return ""
        return numbers[0] if problem.question.startswith("Which") else numbers[-1]

    def is_correct(self, problem: Problem, response: str) -> bool:
        return self.extract(problem, response) == problem.answer
