"""The shared candidate pool: K sampled answers per prompt, with hidden-state features.

Generating is the only expensive step (an LLM on a shared 2-core CPU), and every
user, seed and curve point must see the *same* candidates for comparisons to be
fair, so the pool is generated once and cached: one ``.npz`` (features) and one
``.json`` (texts) per prompt, written arrays-first so a present ``.json`` marks a
complete record. A crash or a time budget loses at most one prompt, and a rerun
resumes. Nothing is pickled (``allow_pickle=False`` on load). ``settings.json``
records how the pool was sampled; a directory from other settings is refused.
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


@dataclass(frozen=True)
class Pool:
    """All cached prompts, stacked: what the simulation and the judges read."""

    settings: PoolSettings  # how it was sampled
    uids: list[str]  # prompt ids, in prompt-set order
    prompts: list[str]  # prompt texts
    topics: np.ndarray  # (P,) topic index per prompt
    instructions: np.ndarray  # (P, d) float32 instruction features
    candidates: np.ndarray  # (P, K, d) float32 candidate features
    texts: list[list[str]]  # (P, K) decoded candidate texts
    finished: np.ndarray  # (P, K) bool: ended by EOS (False: hit max_new_tokens)

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


def _sample_one(
    model: Any, item: PromptItem, settings: PoolSettings, seed: int
) -> tuple[np.ndarray, np.ndarray, list[str], list[bool]]:
    """Instruction feature, (K, d) candidate features, texts and EOS flags of one prompt."""
    from central.prompting import render_prompt
    from central.sampler import SamplingConfig, sample
    from language_ranker.v1 import ranker_pb2 as pb

    ids = render_prompt(model, pb.Prompt(text=item.text))
    config = SamplingConfig(
        k=settings.k,
        max_new_tokens=settings.max_new_tokens,
        seed=seed,
        temperature=settings.temperature,
    )
    stream = sample(model, ids, config, settings.layer)
    instruction = np.asarray(next(stream), dtype=np.float32)
    cands = sorted(stream, key=lambda c: c.index)  # type: ignore[union-attr]
    feats = np.stack([np.asarray(c.feature, dtype=np.float32) for c in cands])  # type: ignore[union-attr]
    texts = [model.tokenizer.decode(c.token_ids, skip_special_tokens=True) for c in cands]  # type: ignore[union-attr]
    return instruction, feats, texts, [bool(c.finished_by_eos) for c in cands]  # type: ignore[union-attr]


def _save(directory: Path, item: PromptItem, record: tuple[Any, ...], seconds: float) -> None:
    instruction, feats, texts, finished = record
    tmp = directory / f"{item.uid}.tmp.npz"
    np.savez(tmp, instruction=instruction, candidates=feats, finished=np.array(finished))
    os.replace(tmp, directory / f"{item.uid}.npz")
    body = {"uid": item.uid, "prompt": item.text, "topic": item.topic, "texts": texts}
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


def load_pool(directory: Path, items: list[PromptItem] | None = None) -> Pool:
    """Load the cached prompts (those of ``items`` that are complete, or all of them)."""
    settings = PoolSettings(**json.loads((directory / "settings.json").read_text()))
    if items is None:
        uids = sorted(p.stem for p in directory.glob("*.json") if p.name != "settings.json")
    else:
        uids = [p.uid for p in items if (directory / f"{p.uid}.json").exists()]
    prompts, topics, insts, cands, texts, fins = [], [], [], [], [], []
    for uid in uids:
        body = json.loads((directory / f"{uid}.json").read_text())
        with np.load(directory / f"{uid}.npz", allow_pickle=False) as arrays:
            insts.append(arrays["instruction"])
            cands.append(arrays["candidates"])
            fins.append(arrays["finished"])
        prompts.append(body["prompt"])
        topics.append(int(body["topic"]))
        texts.append(list(body["texts"]))
    if not uids:
        raise FileNotFoundError(f"no cached prompts under {directory}")
    return Pool(
        settings,
        uids,
        prompts,
        np.array(topics, dtype=np.int64),
        np.stack(insts).astype(np.float32),
        np.stack(cands).astype(np.float32),
        texts,
        np.stack(fins).astype(bool),
    )
