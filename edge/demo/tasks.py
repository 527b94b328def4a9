"""The demo's prompts: checkable problems for correctness, open requests for taste.

Correctness: the default model (SmolLM2-135M-Instruct) is weak, so the task is
chosen for headroom: the first sample is often wrong while some of K samples
are right, which is exactly where a ranker can help.

Taste: short, generic requests to an assistant that any fluent answer serves,
so what decides between K answers is who is reading them.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "ASSISTANT_PROMPTS",
    "LENGTH_HINT",
    "Problem",
    "first_number",
    "larger_number",
    "make_problems",
    "split_assistant_prompts",
    "split_problems",
]

_NUMBER = re.compile(r"-?\d+")

# The small default model rambles up to any token limit: asked plainly, nearly all K
# answers stop at the limit, equally long (96% at 48 tokens). Asked for one sentence,
# about half end on their own, anywhere from 6 to 30 words, so a taste for length
# has something to choose from.
LENGTH_HINT = "Answer in one sentence."

# Short, generic requests to an assistant, written for the demo: any answer is
# acceptable, so what decides between K answers is the user's taste (length,
# layout, tone), not correctness. Varied on purpose: the K samples of one
# prompt then differ in length and format.
ASSISTANT_PROMPTS: tuple[str, ...] = (
    "Explain what a compiler does.",
    "What is photosynthesis?",
    "Give me tips for sleeping better.",
    "How do I make a cup of tea?",
    "Describe a good morning routine.",
    "What is the difference between weather and climate?",
    "Why is the sky blue?",
    "How can I save money on groceries?",
    "Explain what a database is.",
    "What should I pack for a weekend trip?",
    "How do vaccines work?",
    "Give me advice on learning a new language.",
    "What is a healthy breakfast?",
    "Explain how a bicycle stays upright.",
    "How do I start running?",
    "What is machine learning?",
    "Describe the water cycle.",
    "How can I be more productive at work?",
    "What is inflation?",
    "Explain what an operating system does.",
    "How do I write a good email?",
    "What are the benefits of reading?",
    "How does the internet work?",
    "Give me ideas for a rainy day.",
    "What is a black hole?",
    "How do I care for a houseplant?",
    "Explain recursion to a beginner.",
    "What makes a good team leader?",
    "How do I prepare for a job interview?",
    "What is the greenhouse effect?",
    "Describe how bread is made.",
    "How can I reduce stress?",
    "What is a budget and why should I have one?",
    "Explain what DNA is.",
    "How do I clean a laptop screen?",
    "What are good habits for students?",
    "Why do leaves change colour in autumn?",
    "How does a refrigerator keep food cold?",
    "Give me tips for public speaking.",
    "What is the purpose of a resume?",
    "Explain what electricity is.",
    "How do I cook rice?",
    "What is a good way to learn to code?",
    "Describe the life cycle of a butterfly.",
    "How can I drink more water each day?",
    "What is an API?",
    "Why is exercise important?",
    "How do I plan a birthday party?",
    "What is the moon made of?",
    "Explain how a loan works.",
    "How can I make new friends in a new city?",
    "What should I know before adopting a dog?",
    "Describe a simple recipe for soup.",
    "What is renewable energy?",
    "How do I keep my passwords safe?",
    "Explain what a spreadsheet is used for.",
    "What are the planets in our solar system?",
    "How do I write a short story?",
    "Why do we dream?",
    "Give me advice on choosing a laptop.",
    "What is the difference between a virus and a bacterium?",
    "How can I improve my handwriting?",
    "Explain what a noun is.",
    "How do airplanes fly?",
    "What is a good way to start meditating?",
    "Describe what a museum curator does.",
    "How do I fix a flat bicycle tyre?",
    "What is the history of the printing press?",
    "Explain supply and demand.",
    "How can I stay focused while studying?",
    "What is a volcano?",
    "How do I make a smoothie?",
    "Why is sleep important?",
    "Give me tips for taking better photos with a phone.",
    "What does a software engineer do?",
    "Explain how the heart pumps blood.",
    "How do I grow tomatoes at home?",
    "What is the best way to learn the guitar?",
    "Describe the rules of chess briefly.",
    "How can I recycle more at home?",
)


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


def split_assistant_prompts(train: int, test: int, seed: int) -> tuple[list[str], list[str]]:
    """`train` and `test` assistant prompts, disjoint, in a seeded order, each ending
    with LENGTH_HINT."""
    if train < 0 or test < 0 or train + test > len(ASSISTANT_PROMPTS):
        raise ValueError(
            f"train + test must be at most {len(ASSISTANT_PROMPTS)} prompts, got {train} + {test}"
        )
    order = [
        f"{p} {LENGTH_HINT}" for p in random.Random(seed).sample(ASSISTANT_PROMPTS, train + test)
    ]
    return order[:train], order[train:]
