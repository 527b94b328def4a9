"""A varied general-assistant prompt set, generated from topics x request templates.

The set is written by the project (no external data), deterministic for a seed,
and split into train and test by prompt *and* by topic so that a ranker is tested
on subjects it never received feedback on: a preference such as "likes lists"
must transfer across subjects to count as learned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TEMPLATES", "TOPICS", "PromptItem", "make_prompts", "split_prompts"]

TOPICS: tuple[str, ...] = (
    "sleeping better",
    "learning a new language",
    "saving money",
    "growing tomatoes",
    "running a first 5k",
    "writing a cover letter",
    "cooking rice",
    "staying focused",
    "caring for a cat",
    "planning a trip to Japan",
    "public speaking",
    "making coffee",
    "starting to meditate",
    "keeping houseplants alive",
    "learning to code in Python",
    "negotiating a salary",
    "reducing food waste",
    "cleaning a laptop keyboard",
    "training a puppy",
    "managing stress",
    "baking bread",
    "choosing a bicycle",
    "writing a short story",
    "studying for exams",
    "drinking more water",
    "organising a small closet",
    "preparing for a job interview",
    "recycling at home",
    "taking better photos with a phone",
    "learning to swim",
    "budgeting for groceries",
    "hosting a dinner party",
    "reading more books",
    "fixing a flat tyre",
    "making friends in a new city",
    "starting a vegetable garden",
    "writing emails",
    "working from home",
    "choosing a laptop",
    "keeping a journal",
    "learning the guitar",
    "camping for the first time",
    "improving handwriting",
    "making a smoothie",
    "teaching a child to read",
    "painting a room",
    "backing up files",
    "walking more each day",
    "brewing tea",
    "volunteering locally",
)

TEMPLATES: tuple[str, ...] = (
    "Give me some advice on {t}.",
    "What should a beginner know about {t}?",
    "How do I get started with {t}?",
    "Explain the basics of {t}.",
    "What are common mistakes people make when {t}?",
    "Can you help me with {t}? I have no idea where to begin.",
    "Write a short note to a friend about {t}.",
    "What is the most important thing about {t}?",
    "I want to get better at {t}. Any tips?",
    "Describe a simple plan for {t}.",
    "Why do people find {t} hard?",
    "Tell me something useful about {t}.",
)


@dataclass(frozen=True)
class PromptItem:
    """One prompt of the set."""

    uid: str  # stable id: "t{topic:02d}-q{template:02d}"
    text: str  # the user message sent to the model
    topic: int  # index into TOPICS (train/test are split by topic)


def make_prompts(count: int, seed: int = 0) -> list[PromptItem]:
    """``count`` distinct prompts spread evenly over topics, same list for a seed."""
    rng = np.random.default_rng(seed)
    per_topic = -(-count // len(TOPICS))
    if per_topic > len(TEMPLATES):
        raise ValueError(f"at most {len(TOPICS) * len(TEMPLATES)} prompts, asked {count}")
    items: list[PromptItem] = []
    for t, topic in enumerate(TOPICS):
        for q in sorted(rng.choice(len(TEMPLATES), size=per_topic, replace=False)):
            items.append(PromptItem(f"t{t:02d}-q{q:02d}", TEMPLATES[q].format(t=topic), t))
    order = rng.permutation(len(items))
    return [items[i] for i in order[:count]]


def split_prompts(
    items: list[PromptItem], test_fraction: float = 0.3, seed: int = 0
) -> tuple[list[PromptItem], list[PromptItem]]:
    """Train/test split by topic: no test prompt shares a topic with a train prompt."""
    topics = sorted({p.topic for p in items})
    rng = np.random.default_rng(seed + 1)
    n_test = max(1, round(len(topics) * test_fraction))
    test_topics = set(rng.choice(topics, size=n_test, replace=False).tolist())
    train = [p for p in items if p.topic not in test_topics]
    test = [p for p in items if p.topic in test_topics]
    return train, test
