"""The shared candidate pool: K sampled answers per prompt, with representation v2.

Generating is the only expensive step (an LLM on a shared 2-core CPU), and every
user, seed and curve point must see the *same* candidates for comparisons to be
fair, so the pool is generated once and cached: one ``.npz`` (features) and one
``.json`` (texts) per prompt, written arrays-first so a present ``.json`` marks a
complete record. A crash or a time budget loses at most one prompt, and a rerun
resumes. Nothing is pickled (``allow_pickle=False`` on load). ``settings.json``
records how the pool was sampled; a directory from other settings is refused.

Each candidate carries what ``PersonalRanker.generate`` asks central for
(representation v2): the last token's hidden state, the mean hidden state over
the response, the mean next-token entropy, and the scalars the on-device
signals read (token count, cumulative log-probability, how it finished). The
vectors are stored as float16, the precision central sends them in, and widened
to float32 on load as the edge client does.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ranker_personalize.prompts import PromptItem

__all__ = ["Pool", "PoolSettings", "generate_pool", "load_pool"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolSettings:
    """How the pool was sampled; two pools are comparable only if these match."""

    model: str  # model name as loaded, e.g. "SmolLM2-135M-Instruct.Q4_1"
    k: int  # candidates per prompt
    max_new_tokens: int  # response budget per candidate
    temperature: float  # sampling temperature (1.0: the model's own distribution)
    layer: int  # hidden-state index the features come from
    seed: int  # base seed; prompt i uses seed + i
    representation: int = 2  # 2: last + mean vectors, mean entropy, scalars (1: last only)


@dataclass(frozen=True)
class Pool:
    """All cached prompts, stacked: what the simulation and the judges read."""

    settings: PoolSettings  # how it was sampled
    uids: list[str]  # prompt ids, in prompt-set order
    prompts: list[str]  # prompt texts
    topics: np.ndarray  # (P,) topic index per prompt
    instructions: np.ndarray  # (P, d) float32 instruction features
    candidates: np.ndarray  # (P, K, d) float32 last-token vectors
    texts: list[list[str]]  # (P, K) decoded candidate texts
    finished: np.ndarray  # (P, K) bool: ended by EOS (False: hit max_new_tokens)
    means: np.ndarray  # (P, K, d) float32 mean vectors over each response
    num_tokens: np.ndarray  # (P, K) int64 generated tokens, EOS excluded
    cumulative: np.ndarray  # (P, K) float64 sum of token log-probabilities
    entropies: np.ndarray  # (P, K) float64 mean next-token entropy (nats)

    def __len__(self) -> int:
        return len(self.uids)

    def subset(self, index: np.ndarray | list[int]) -> Pool:
        """The prompts at ``index``, in that order (train/test views)."""
        idx = np.asarray(index, dtype=np.int64)
        return Pool(
            self.settings,
            [self.uids[i] for i in idx],
            [self.prompts[i] for i in idx],
            self.topics[idx],
            self.instructions[idx],
            self.candidates[idx],
            [self.texts[i] for i in idx],
            self.finished[idx],
            self.means[idx],
            self.num_tokens[idx],
            self.cumulative[idx],
            self.entropies[idx],
        )


def _check_settings(directory: Path, settings: PoolSettings) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    meta = directory / "settings.json"
    wanted = asdict(settings)
    if meta.exists():
        if json.loads(meta.read_text()) != wanted:
            raise ValueError(f"{directory} holds a pool sampled with other settings")
    else:
        meta.write_text(json.dumps(wanted, indent=1))


def _sample_one(model: Any, item: PromptItem, settings: PoolSettings, seed: int) -> dict[str, Any]:
    """One prompt's candidates, as arrays and texts (see ``_save``)."""
    from central.prompting import render_prompt
    from central.sampler import SampledCandidate, SamplingConfig, sample
    from language_ranker.v1 import ranker_pb2 as pb

    ids = render_prompt(model, pb.Prompt(text=item.text))
    config = SamplingConfig(
        k=settings.k,
        max_new_tokens=settings.max_new_tokens,
        seed=seed,
        temperature=settings.temperature,
    )
    stream = sample(model, ids, config, settings.layer, entropy=True)
    instruction = np.asarray(next(stream), dtype=np.float32)
    cands = sorted((c for c in stream if isinstance(c, SampledCandidate)), key=lambda c: c.index)
    return {
        "instruction": instruction.astype(np.float16),
        "candidates": np.stack([c.feature for c in cands]).astype(np.float16),
        "means": np.stack([c.mean_feature for c in cands]).astype(np.float16),
        "finished": np.array([c.finished_by_eos for c in cands]),
        "num_tokens": np.array([len(c.token_ids) for c in cands], np.int64),
        "cumulative": np.array([c.cumulative_logprob for c in cands], np.float64),
        "entropies": np.array([c.mean_entropy or 0.0 for c in cands], np.float64),
        "texts": [model.tokenizer.decode(c.token_ids, skip_special_tokens=True) for c in cands],
    }


def _save(directory: Path, item: PromptItem, record: dict[str, Any], seconds: float) -> None:
    arrays = {key: value for key, value in record.items() if key != "texts"}
    tmp = directory / f"{item.uid}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, directory / f"{item.uid}.npz")
    body = {"uid": item.uid, "prompt": item.text, "topic": item.topic, "texts": record["texts"]}
    body["seconds"] = round(seconds, 3)
    tmp_json = directory / f"{item.uid}.json.tmp"
    tmp_json.write_text(json.dumps(body))
    os.replace(tmp_json, directory / f"{item.uid}.json")


def generate_pool(
    model: Any,
    items: list[PromptItem],
    directory: Path,
    settings: PoolSettings,
    *,
    budget_s: float | None = None,
) -> int:
    """Sample every prompt not cached yet; stops cleanly at ``budget_s``. Returns the new count."""
    _check_settings(directory, settings)
    start, made = time.perf_counter(), 0
    # A bar on a terminal (tqdm's disable=None), nothing in logs or CI.
    for i, item in enumerate(tqdm(items, desc="pool prompts", unit="prompt", disable=None)):
        if (directory / f"{item.uid}.json").exists():
            continue
        if budget_s is not None and time.perf_counter() - start > budget_s:
            log.warning("pool: time budget reached after %d new prompts", made)
            break
        t0 = time.perf_counter()
        record = _sample_one(model, item, settings, settings.seed + i)
        _save(directory, item, record, time.perf_counter() - t0)
        made += 1
        log.info(
            "pool: %s done in %.1fs (%d/%d)", item.uid, time.perf_counter() - t0, i + 1, len(items)
        )
    return made


_ARRAYS = ("instruction", "candidates", "finished", "means", "num_tokens", "cumulative",
           "entropies")  # fmt: skip


def load_pool(directory: Path, items: list[PromptItem] | None = None) -> Pool:
    """Load the cached prompts (those of ``items`` that are complete, or all of them)."""
    settings = PoolSettings(**json.loads((directory / "settings.json").read_text()))
    if settings.representation != 2:
        raise ValueError(f"{directory} holds a representation-1 pool: sample it again")
    if items is None:
        uids = sorted(p.stem for p in directory.glob("*.json") if p.name != "settings.json")
    else:
        uids = [p.uid for p in items if (directory / f"{p.uid}.json").exists()]
    if not uids:
        raise FileNotFoundError(f"no cached prompts under {directory}")
    prompts, topics, texts = [], [], []
    columns: dict[str, list[np.ndarray]] = {name: [] for name in _ARRAYS}
    for uid in uids:
        body = json.loads((directory / f"{uid}.json").read_text())
        with np.load(directory / f"{uid}.npz", allow_pickle=False) as arrays:
            for name in _ARRAYS:
                columns[name].append(arrays[name])
        prompts.append(body["prompt"])
        topics.append(int(body["topic"]))
        texts.append(list(body["texts"]))
    stacked = {name: np.stack(values) for name, values in columns.items()}
    return Pool(
        settings,
        uids,
        prompts,
        np.array(topics, dtype=np.int64),
        stacked["instruction"].astype(np.float32),
        stacked["candidates"].astype(np.float32),
        texts,
        stacked["finished"].astype(bool),
        stacked["means"].astype(np.float32),
        stacked["num_tokens"].astype(np.int64),
        stacked["cumulative"].astype(np.float64),
        stacked["entropies"].astype(np.float64),
    )
