"""Classification family: one-word sentiment of a short generated review."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from ranker_eval.tasks.base import Problem

_SUBJECTS = (
    "movie", "phone", "restaurant", "hotel", "book", "laptop", "concert", "game",
    "jacket", "coffee", "museum", "airline", "camera", "pizza", "sofa", "headphones",
)  # fmt: skip
_POSITIVE = (
    "absolutely loved", "really enjoyed", "was delighted by", "highly recommend",
    "was impressed by", "adored", "had a wonderful time with", "was thrilled with",
)  # fmt: skip
_NEGATIVE = (
    "really hated", "was disappointed by", "would never recommend", "regret buying",
    "was annoyed by", "could not stand", "wasted my money on", "was let down by",
)  # fmt: skip
_POS_TAIL = ("Five stars.", "Worth every penny.", "Will come back.", "Great value.", "")
_NEG_TAIL = ("One star.", "Total waste.", "Never again.", "Avoid it.", "")
_LABEL = re.compile(r"\b(positive|negative)\b", re.IGNORECASE)
_SHOTS = (
    ("I adored this blender. Great value.", "positive"),
    ("I was let down by this tent. Never again.", "negative"),
)


@dataclass(frozen=True)
class SentimentTask:
    """The first 'positive'/'negative' word in the response must match the review's polarity."""

    name: str = "sentiment"  # task id
    max_new_tokens: int = 8  # one word, maybe with a period or a lead-in
    temperature: float = 1.0  # sampling temperature for this family
    stop: tuple[str, ...] = ("\n",)  # base models: the answer is the first line

    def problems(self, count: int, seed: int) -> list[Problem]:
        rng = random.Random(seed)
        seen: set[str] = set()
        out: list[Problem] = []
        while len(out) < count:
            positive = rng.random() < 0.5
            verb = rng.choice(_POSITIVE if positive else _NEGATIVE)
            tail = rng.choice(_POS_TAIL if positive else _NEG_TAIL)
            review = f"I {verb} this {rng.choice(_SUBJECTS)}. {tail}".strip()
            if review in seen:
                continue
            seen.add(review)
            label = "positive" if positive else "negative"
            out.append(Problem(uid=f"sentiment-{len(out):04d}", question=review, answer=label))
        return out

    def prompt(self, problem: Problem, chat: bool) -> str:
        if chat:
            return (
                f'Review: "{problem.question}"\nIs this review positive or negative? '
                "Reply with one word."
            )
        shots = "".join(f"Review: {r}\nSentiment: {s}\n\n" for r, s in _SHOTS)
        return f"{shots}Review: {problem.question}\nSentiment:"

    def extract(self, problem: Problem, response: str) -> str:
        match = _LABEL.search(response)
        return match.group(1).lower() if match else ""

    def is_correct(self, problem: Problem, response: str) -> bool:
        return self.extract(problem, response) == problem.answer
