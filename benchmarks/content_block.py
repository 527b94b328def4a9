"""The content block on device: cost per set of K=8 answers, and the learner's update with it.

Targets (issue 22): the content block for K=8 answers of ~50 tokens costs
<= 5 ms p50 on one core, torch-free; a learner update stays <= 10 ms p50 at
576-d with 200 events of history.

- ``lexicon``: the shipped content block, ``edge.runtime.lexicon.lexicon_block``
  (211 word-category counts) on K=8 answers, and the study's hashed-words block
  (``ranker_personalize.words.content_block``), against the on-device signals
  (``edge.runtime.signals.text_signals``) of the same answers, the block every
  ranker already computes, timed interleaved in the same process; ``torch_loaded``
  says whether anything here imported torch (it must not).
- ``minilm`` (with ``--minilm DIR``, a directory written by
  ``ranker_personalize.content_vectors.export_minilm``): all-MiniLM-L6-v2 on
  onnxruntime, one thread, ``tokenizers`` tokenisation, mean-pooled: the
  sentence-encoder alternative; and ``static``, the mean of its input token
  embeddings (tokenizer + table lookup, no network).
- ``update``: the shipped torch-free fit (``TasteFit`` over one more block)
  after each new event
  on top of ``--history`` events: 576-d last and mean vectors + signals (v2),
  then v2 + the lexicon with the shipped config (``TasteConfig()``: its prior
  adapting per category; the default), v2 + a 576-d content block (the
  embedding-layer mean central can send), v2 + the 1024-column hashed-words
  block; the fit timed as ``benchmarks/personal_update.py`` times it
  (``FitReport.seconds``).

Answers are built from a fixed list of everyday-advice sentences (seeded), ~50
tokens each; the vectors are random (their values do not change the cost).

    python benchmarks/content_block.py [--quick] [--minilm DIR] [--history 200]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import itertools
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import base_parser, emit, interleaved, median

K = 8
CONTENT_TARGET_MS = 5.0
UPDATE_TARGET_MS = 10.0
SENTENCES = (
    "Start with a simple routine and keep it for a week.",
    "You might find it easier to begin in the morning.",
    "Set aside about 20 minutes a day for practice.",
    "Don't worry if it feels hard at first; that is normal.",
    "A small budget helps you avoid spending too much money.",
    "Try to get outside for a walk when the weather is good.",
    "It is important to drink enough water and sleep well.",
    "Ask a friend or a colleague to join you.",
    "Write down your goals so you can track your progress.",
    "Be careful not to overdo it in the first few weeks.",
    "Many people enjoy the process once they get started.",
    "Because habits take time, be patient with yourself.",
    "For example, you could read ten pages every evening.",
    "Check the instructions before you buy any equipment.",
    "Finally, remember to rest and celebrate small wins.",
    "Tokyo and Kyoto are popular places to visit in spring.",
)


def answers(rng: np.random.Generator, k: int = K) -> list[str]:
    """K answers of four sentences each (~50 tokens of SmolLM2's tokenizer)."""
    return [" ".join(rng.choice(SENTENCES, size=4, replace=False)) for _ in range(k)]


def cycling(sets: list[list[str]]) -> Callable[[], list[str]]:
    """A new set of answers at each call, round robin (no cache warms on one set)."""
    it = itertools.cycle(sets)
    return lambda: next(it)


def content_costs(reps: int) -> dict[str, float]:
    from edge.runtime.lexicon import lexicon_block
    from edge.runtime.signals import text_signals
    from ranker_personalize.words import content_block

    rng = np.random.default_rng(0)
    sets = [answers(rng) for _ in range(64)]
    next_set = cycling(sets)
    lexicon_block(sets[0])  # the category lists load once per process
    seconds = interleaved(
        {
            "lexicon": lambda: lexicon_block(next_set()),
            "content": lambda: content_block(next_set()),
            "signals": lambda: text_signals(next_set()),
        },
        reps,
    )
    words = np.mean([len(t.split()) for s in sets for t in s])
    return {
        "lexicon_ms_p50": 1000 * median(seconds["lexicon"]),
        "lexicon_ms_p95": 1000 * float(np.percentile(seconds["lexicon"], 95)),
        "lexicon_vs_signals": median(seconds["lexicon"]) / median(seconds["signals"]),
        "content_ms_p50": 1000 * median(seconds["content"]),
        "content_ms_p95": 1000 * float(np.percentile(seconds["content"], 95)),
        "signals_ms_p50": 1000 * median(seconds["signals"]),
        "content_vs_signals": median(seconds["content"]) / median(seconds["signals"]),
        "words_per_answer": float(words),
    }


def minilm_costs(directory: Path, reps: int) -> dict[str, float]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from ranker_personalize.content_vectors import MiniLM

    encoder = MiniLM(directory, threads=1)
    rng = np.random.default_rng(0)
    next_set = cycling([answers(rng) for _ in range(8)])
    seconds = interleaved(
        {
            "minilm": lambda: encoder.encode(next_set()),
            "static": lambda: encoder.static(next_set()),
        },
        reps,
    )
    return {
        "minilm_ms_p50": 1000 * median(seconds["minilm"]),
        "minilm_ms_p95": 1000 * float(np.percentile(seconds["minilm"], 95)),
        "static_ms_p50": 1000 * median(seconds["static"]),
    }


def update_costs(history: int, repeats: int, dim: int = 576) -> dict[str, float]:
    """The fit after one new event on top of ``history`` events, per representation:
    v2 (last + mean + signals), + the lexicon (211, the shipped default), + the
    embedding-layer mean central can send (576, dense), + the hashed-words block (1024)."""
    from edge.app.taste import Reaction, TasteConfig, TasteFit
    from edge.runtime.lexicon import LEXICON_WIDTH, lexicon_block
    from edge.runtime.signals import SIGNAL_NAMES, text_signals
    from ranker_personalize.blockfit import block_config
    from ranker_personalize.words import CONTENT_DIM, content_block

    extra = {"v2": 0, "v2_lexicon": LEXICON_WIDTH, "v2_emb": dim, "v2_words": CONTENT_DIM}
    out: dict[str, float] = {}
    for label, width in extra.items():
        rng = np.random.default_rng(1)
        sizes = {"last": dim, "mean": dim, "signals": len(SIGNAL_NAMES)}
        if label == "v2_lexicon":
            sizes["lexicon"] = width
        elif width:
            sizes["content"] = width
        fit = TasteFit(sizes, block_config(TasteConfig()))
        times = []
        for n in range(history + repeats):
            texts = answers(rng)
            blocks = {
                "last": rng.standard_normal((K, dim)).astype(np.float16).astype(np.float32),
                "mean": rng.standard_normal((K, dim)).astype(np.float16).astype(np.float32),
                "signals": text_signals(texts),
            }
            if label == "v2_lexicon":
                blocks["lexicon"] = lexicon_block(texts)
            elif label == "v2_emb":
                blocks["content"] = rng.standard_normal((K, dim)).astype(np.float32)
            elif label == "v2_words":
                blocks["content"] = content_block(texts)
            fit.add_set(str(n), blocks)
            shown = int(rng.integers(K))
            fit.set_reactions(str(n), [Reaction("thumb", shown, float(rng.random() < 0.5))])
            report = fit.fit(40, 1.0) if n == 0 else fit.fit(1, 0.25)
            if n >= history:
                times.append(report.seconds)
        out[f"update_ms_p50_{label}"] = 1000 * median(times)
        out[f"update_ms_p95_{label}"] = 1000 * float(np.percentile(times, 95))
    for label in ("v2_lexicon", "v2_emb", "v2_words"):
        out[f"update_ratio_{label}"] = out[f"update_ms_p50_{label}"] / out["update_ms_p50_v2"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser: argparse.ArgumentParser = base_parser(__doc__)
    parser.add_argument("--minilm", type=Path, default=None, help="exported MiniLM directory")
    parser.add_argument("--history", type=int, default=200, help="events learned before timing")
    args = parser.parse_args(argv)
    reps = 50 if args.quick else 400
    result: dict[str, object] = {"benchmark": "content_block", "k": K, "threads": 1}
    result.update(content_costs(reps))
    if args.minilm is not None:
        result.update(minilm_costs(args.minilm, 10 if args.quick else 40))
    history = min(args.history, 20) if args.quick else args.history
    result.update(update_costs(history, 10 if args.quick else 40))
    result["content_target_ms"] = CONTENT_TARGET_MS
    result["update_target_ms"] = UPDATE_TARGET_MS
    result["torch_loaded"] = "torch" in sys.modules  # the device side must not need it
    result["content_met"] = result["lexicon_ms_p50"] <= CONTENT_TARGET_MS  # type: ignore[operator]
    result["update_met"] = result["update_ms_p50_v2_lexicon"] <= UPDATE_TARGET_MS  # type: ignore[operator]
    for key, value in result.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
