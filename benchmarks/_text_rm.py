"""The harness's text reward model on synthetic candidate texts (not a benchmark itself).

P1 and P2 compare the ranker with the text RM the quality harness uses
(`ranker_eval.methods.reward_model`: MiniLM-L6 fine-tuned on (question,
response) pairs, 22.7M parameters). The harness has no 37,400 real texts of
MBPP size, so the texts here are synthetic: MBPP-like task statements and
Python-like answers of 30-60 words, which the MiniLM tokenizer turns into
~40-110 tokens per (question, response) pair. What the RM costs depends on
token counts, not on what the words mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np

WORDS = (
    "def",
    "return",
    "for",
    "in",
    "range",
    "if",
    "else",
    "while",
    "list",
    "dict",
    "the",
    "a",
    "of",
    "to",
    "number",
    "string",
    "result",
    "value",
    "index",
    "count",
    "sum",
    "max",
    "min",
    "sorted",
    "len",
    "append",
    "split",
    "join",
    "items",
    "key",
    "function",
    "python",
    "write",
    "check",
    "given",
    "find",
    "element",
    "elements",
    "first",
    "last",
    "between",
    "true",
    "false",
    "none",
    "import",
    "math",
    "total",
    "left",
    "right",
    "mid",
    "node",
    "tree",
    "array",
    "word",
    "words",
)


def synthetic_texts(problems: int, k: int, seed: int) -> tuple[list[str], list[list[str]]]:
    """`problems` task statements (12-25 words) and `k` answers each (30-60 words)."""
    rng = np.random.default_rng(seed)

    def sentence(low: int, high: int) -> str:
        return " ".join(rng.choice(WORDS, size=int(rng.integers(low, high + 1))))

    prompts = [f"Write a python function to {sentence(12, 25)}." for _ in range(problems)]
    texts = [[f"def solve(x):\n    {sentence(30, 60)}" for _ in range(k)] for _ in range(problems)]
    return prompts, texts


def pool(problems: int, k: int, seed: int) -> Any:
    """A harness Pool carrying only what the text RM reads (prompts, texts, labels)."""
    from ranker_eval.methods.data import Pool

    prompts, texts = synthetic_texts(problems, k, seed)
    labels = (np.random.default_rng(seed + 1).random((problems, k)) < 0.4).astype(np.float32)
    empty = np.zeros((problems, 0, 0), np.float32)
    return Pool(
        problems=[None] * problems,  # type: ignore[list-item]
        prompts=prompts,
        instruction=empty,
        candidates=np.zeros((problems, k, 0, 0), np.float32),
        labels=labels,
        logprobs=np.zeros((problems, k), np.float32),
        texts=texts,
        answers=[[""] * k for _ in range(problems)],
        greedy=np.zeros(problems, np.float32),
        beam=None,
        gen_seconds=0.0,
    )


def token_counts(rm: Any, pool: Any, pairs: int = 200) -> float:
    """Median tokens per (question, response) pair as the RM's tokenizer sees them."""
    flat = [(g, j) for g in range(pool.size) for j in range(pool.k)][:pairs]
    counts = [
        len(rm.tokenizer(pool.prompts[g], pool.texts[g][j])["input_ids"])  # type: ignore[operator]
        for g, j in flat
    ]
    return float(np.median(counts))
