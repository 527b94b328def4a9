"""Training a ranker on a GroupDataset: one seeded, batched pass per epoch (torch).

Speed matters because training runs on the user's CPU: groups of equal K are
batched into one (B, K, d) tensor so the heavy d -> 64 projection is a single
matmul per step, and float16 features are only widened per batch. Everything
random (init is done by ``build_ranker``; shuffling and dropout here) flows from
``TrainConfig.seed`` so the same data and seed give bitwise the same weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from edge._errors import TrainingError
from edge.app.dataset import Block, GroupDataset
from edge.training.losses import listwise_kl, mse, pairwise_logistic, pointwise_bce
from edge.training.rankers import RankerModule, VectorRanker, require_family

__all__ = [
    "TrainConfig",
    "TrainResult",
    "block_loss",
    "evaluate_loss",
    "optimizer_step",
    "top1_accuracy",
    "train",
]


@dataclass
class TrainConfig:
    """How to train; the defaults learn a planted signal in one epoch without tuning."""

    binary_loss: Literal["auto", "listwise", "pointwise"] = "auto"  # auto: list->KL, point->BCE
    optimizer: Literal["adamw", "sgd"] = "adamw"  # AdamW is robust on tiny data; SGD as in paper
    lr: float = 3e-3  # learning rate (AdamW); for SGD the paper uses 0.05-1.0
    weight_decay: float = 1e-4  # decoupled weight decay, as in the paper
    batch_candidates: int = 128  # candidates per step; groups are packed up to this many
    epochs: int = 1  # passes over the data (the paper trains one epoch)
    min_steps: int = 0  # run extra epochs until at least this many steps (tiny user data)
    max_grad_norm: float | None = 1.0  # clip the gradient norm; None disables clipping
    seed: int = 0  # seeds shuffling and dropout; same seed + data -> same weights
    progress: bool = False  # show a tqdm progress bar over steps
    # torch intra-op threads while training (None: leave torch's setting). 1 by default:
    # on a 2-core device shared with the app, more threads spin against each other
    # (measured 4.4 s with 1 thread vs 159 s with 2 under load for 37,400 x 4096-d).
    num_threads: int | None = 1


@dataclass
class TrainResult:
    """What happened during training (losses are per optimizer step)."""

    steps: int  # optimizer steps taken
    epochs: int  # passes over the data
    losses: list[float] = field(repr=False)  # training loss at every step
    seconds: float  # wall-clock time of the loop

    @property
    def first_loss(self) -> float:
        return self.losses[0] if self.losses else math.nan

    @property
    def last_loss(self) -> float:
        return self.losses[-1] if self.losses else math.nan


def _groups_per_batch(block: Block, batch_candidates: int) -> int:
    return max(1, batch_candidates // block.k)


def _plan(
    data: GroupDataset, config: TrainConfig, rng: np.random.Generator
) -> list[tuple[int, np.ndarray]]:
    """One epoch: shuffled (block index, group indices) batches, blocks interleaved."""
    batches: list[tuple[int, np.ndarray]] = []
    for b, block in enumerate(data.blocks):
        order = rng.permutation(len(block))
        size = _groups_per_batch(block, config.batch_candidates)
        batches += [(b, np.sort(order[s : s + size])) for s in range(0, len(order), size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _tensors(block: Block, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    inst = torch.from_numpy(np.ascontiguousarray(block.instructions[idx], dtype=np.float32))
    cand = torch.from_numpy(np.ascontiguousarray(block.candidates[idx], dtype=np.float32))
    return inst, cand, torch.from_numpy(np.ascontiguousarray(block.labels[idx]))


def _binary_mode(model: VectorRanker, config: TrainConfig) -> str:
    if config.binary_loss != "auto":
        return config.binary_loss
    return "listwise" if model.kind == "list" else "pointwise"


def block_loss(
    model: RankerModule, block: Block, idx: np.ndarray, mode: str
) -> tuple[torch.Tensor, int]:
    """Loss of one batch from ``block``, chosen by the block's label kind.

    Listwise mode falls back to BCE for groups with only positives or only
    negatives (a single thumbs-up), so such feedback still teaches something.
    """
    model = require_family(model, VectorRanker, "train", "block_loss()")
    inst, cand, labels = _tensors(block, idx)
    scores = model(inst, cand)
    if block.kind == "pair":
        return pairwise_logistic(scores)
    if block.kind == "graded":
        return mse(scores, labels)
    if mode == "pointwise":
        return pointwise_bce(scores, labels)
    kl, n_kl = listwise_kl(scores, labels)
    flat = ~((labels.sum(-1) > 0) & (labels.amax(-1) > labels.amin(-1)))
    if not bool(flat.any()):
        return kl, n_kl
    bce, n_bce = pointwise_bce(scores[flat], labels[flat])
    n = n_kl + n_bce
    return (kl * n_kl + bce * n_bce) / n, n


def optimizer_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    max_grad_norm: float | None,
) -> float:
    """One update from `loss` (gradient norm clipped when asked); returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    return float(loss.detach())


def _optimizer(model: VectorRanker, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _epochs_needed(data: GroupDataset, config: TrainConfig) -> int:
    per_epoch = sum(
        math.ceil(len(b) / _groups_per_batch(b, config.batch_candidates)) for b in data.blocks
    )
    if config.min_steps <= 0:
        return config.epochs
    return max(config.epochs, math.ceil(config.min_steps / max(per_epoch, 1)))


def train(
    model: RankerModule, data: GroupDataset, config: TrainConfig | None = None
) -> TrainResult:
    """Train ``model`` in place on ``data``; returns per-step losses and timing.

    Takes list and point rankers; a SWIFT head (per-token features) is refused
    with a ``TrainingError`` pointing to ``edge.swift.train_swift``.
    """
    model = require_family(model, VectorRanker, "train", "train()")
    config = config or TrainConfig()
    if data.num_groups == 0:
        raise TrainingError("nothing to train on: the dataset has no groups or pairs")
    if data.feature_size != model.feature_size:
        raise TrainingError(
            f"dataset features have {data.feature_size} values, ranker expects {model.feature_size}"
        )
    rng = np.random.default_rng(config.seed)
    mode = _binary_mode(model, config)
    epochs = _epochs_needed(data, config)
    plans = [_plan(data, config, rng) for _ in range(epochs)]
    optimizer = _optimizer(model, config)
    losses: list[float] = []
    start = time.perf_counter()
    model.train()
    threads = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    try:
        _loop(model, data, plans, optimizer, mode, config, losses)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return TrainResult(len(losses), epochs, losses, time.perf_counter() - start)


def _loop(
    model: VectorRanker,
    data: GroupDataset,
    plans: list[list[tuple[int, np.ndarray]]],
    optimizer: torch.optim.Optimizer,
    mode: str,
    config: TrainConfig,
    losses: list[float],
) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        bar = tqdm(total=sum(map(len, plans)), disable=not config.progress, desc="train")
        for plan in plans:
            for b, idx in plan:
                loss, n = block_loss(model, data.blocks[b], idx, mode)
                if n == 0:
                    bar.update()
                    continue
                losses.append(optimizer_step(model, optimizer, loss, config.max_grad_norm))
                bar.update()
                bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        bar.close()


def _eval_batches(data: GroupDataset, batch_candidates: int) -> Iterator[tuple[int, np.ndarray]]:
    for b, block in enumerate(data.blocks):
        size = _groups_per_batch(block, batch_candidates)
        for s in range(0, len(block), size):
            yield b, np.arange(s, min(s + size, len(block)))


@torch.no_grad()
def evaluate_loss(
    model: RankerModule, data: GroupDataset, config: TrainConfig | None = None
) -> float:
    """Mean training loss over ``data`` without updating (weighted by groups)."""
    model = require_family(model, VectorRanker, "train", "evaluate_loss()")
    config = config or TrainConfig()
    mode = _binary_mode(model, config)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for b, idx in _eval_batches(data, 4096):
        loss, n = block_loss(model, data.blocks[b], idx, mode)
        total += float(loss) * n
        count += n
    model.train(was_training)
    return total / count if count else math.nan


@torch.no_grad()
def top1_accuracy(model: RankerModule, data: GroupDataset) -> float:
    """Fraction of non-pair groups where the top-scored candidate has the best label.

    Pairs count as groups of two where the preferred one must win.
    """
    model = require_family(model, VectorRanker, "train", "top1_accuracy()")
    was_training = model.training
    model.eval()
    hits, count = 0, 0
    for b, idx in _eval_batches(data, 4096):
        inst, cand, labels = _tensors(data.blocks[b], idx)
        best = model(inst, cand).argmax(-1)
        chosen = labels.gather(1, best[:, None]).squeeze(1)
        hits += int((chosen == labels.amax(-1)).sum())
        count += len(idx)
    model.train(was_training)
    return hits / count if count else math.nan
