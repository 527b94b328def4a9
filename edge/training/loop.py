"""Training a ranker on a GroupDataset (torch): to convergence, or for a fixed length.

By default training holds out a slice of the groups (``holdout``, at least
``min_holdout_groups``, chosen by the seed), runs epochs over the rest until
the held-out loss has not improved for ``patience`` epochs, and restores the
weights of the best epoch. A fixed short run (the paper's one epoch) stops long
before a small ranker converges, and a fixed long one overfits a few dozen
groups; the held-out loss tells when to stop on every dataset size. A caller
that fixes the length (``epochs`` or ``min_steps``) gets exactly that instead,
on all the data: the harness's step budgets and the per-event learner rely on
it.

Speed matters because training runs on the user's CPU: groups of equal K are
batched into one (B, K, d) tensor so each heavy d -> 64 projection is a single
matmul per step, and float16 features are only widened per batch. Everything
random (init is done by ``build_ranker``; the held-out slice, shuffling and
dropout here) flows from ``TrainConfig.seed`` so the same data and seed give
bitwise the same weights.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from edge._errors import ConfigError, TrainingError
from edge.app.dataset import Block, GroupDataset
from edge.runtime.onnx_meta import (
    INPUT_CANDIDATES,
    INPUT_INSTRUCTION,
    INPUT_MEAN_CANDIDATES,
    INPUT_SIGNALS,
)
from edge.training.losses import listwise_kl, mse, pairwise_logistic, pointwise_bce
from edge.training.rankers import PartRanker, RankerModule, VectorRanker, require_family

__all__ = [
    "TrainConfig",
    "TrainResult",
    "block_loss",
    "evaluate_loss",
    "optimizer_step",
    "top1_accuracy",
    "train",
]

# Per block, the group indices a pass uses (all of them, or one side of the held-out split).
Indices = list[np.ndarray]
Batch = tuple[int, np.ndarray]  # (block index, sorted group indices)


@dataclass(frozen=True)
class TrainConfig:
    """How to train; the defaults train to convergence with early stopping.

    The length: leave ``epochs`` None and ``min_steps`` 0 to stop on the held-out
    loss; set ``epochs`` (and/or ``min_steps``) for exactly that many passes
    over all the data, as the paper (one epoch) and the per-event learner do.
    """

    binary_loss: Literal["auto", "listwise", "pointwise"] = "auto"  # auto: list->KL, point->BCE
    optimizer: Literal["adamw", "sgd"] = "adamw"  # AdamW is robust on tiny data; SGD as in paper
    lr: float = 3e-3  # learning rate (AdamW); for SGD the paper uses 0.05-1.0
    weight_decay: float = 1e-4  # decoupled weight decay, as in the paper
    batch_candidates: int = 128  # candidates per step; groups are packed up to this many
    epochs: int | None = None  # fixed passes over the data; None: early stopping (see below)
    min_steps: int = 0  # fixed mode: run extra epochs until at least this many steps
    # -- early stopping (when neither epochs nor min_steps is set) --
    holdout: float = 0.2  # fraction of the groups held out to decide when to stop
    min_holdout_groups: int = 2  # hold out at least this many (and train on at least as many)
    patience: int = 10  # stop after this many epochs without a better held-out loss
    max_epochs: int = 200  # stop after this many epochs in any case
    min_delta: float = 1e-4  # a held-out loss must beat the best by this much to count
    steps_without_holdout: int = 30  # too few groups to hold any out: train this many steps
    # -- the rest --
    fit_signal_scaling: bool = True  # fit the signals' standardisation if the ranker has none
    max_grad_norm: float | None = 1.0  # clip the gradient norm; None disables clipping
    seed: int = 0  # seeds the held-out slice, shuffling and dropout; same seed -> same weights
    progress: bool = False  # show a tqdm progress bar over steps
    # torch intra-op threads while training (None: leave torch's setting). 1 by default:
    # on a 2-core device shared with the app, more threads spin against each other
    # (measured 4.4 s with 1 thread vs 159 s with 2 under load for 37,400 x 4096-d).
    num_threads: int | None = 1

    def __post_init__(self) -> None:
        losses = ("auto", "listwise", "pointwise")
        if self.binary_loss not in losses:
            raise ConfigError(f"binary_loss must be one of {losses}, got {self.binary_loss!r}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ConfigError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.batch_candidates < 1:
            raise ConfigError(f"batch_candidates must be at least 1, got {self.batch_candidates}")

    @property
    def early_stopping(self) -> bool:
        """True unless the caller fixed the length of training (``epochs`` or ``min_steps``)."""
        return self.epochs is None and self.min_steps <= 0


@dataclass
class TrainResult:
    """What happened during training (losses are per optimizer step)."""

    steps: int  # optimizer steps taken
    epochs: int  # passes over the (training part of the) data
    losses: list[float] = field(repr=False)  # training loss at every step
    seconds: float  # wall-clock time of the loop
    # Early stopping only: the held-out loss before training (index 0) and after each epoch,
    # the epoch whose weights were restored (0: training never beat the initial weights),
    # and how many groups were held out.
    holdout_losses: list[float] = field(default_factory=list, repr=False)
    best_epoch: int | None = None
    holdout_groups: int = 0

    @property
    def first_loss(self) -> float:
        return self.losses[0] if self.losses else math.nan

    @property
    def last_loss(self) -> float:
        return self.losses[-1] if self.losses else math.nan

    @property
    def best_holdout_loss(self) -> float:
        """The held-out loss of the restored weights (NaN without early stopping)."""
        return self.holdout_losses[self.best_epoch] if self.best_epoch is not None else math.nan


# -- the data a batch feeds -------------------------------------------------------------
def _groups_per_batch(block: Block, batch_candidates: int) -> int:
    return max(1, batch_candidates // block.k)


def _inputs(model: VectorRanker, block: Block, idx: np.ndarray) -> dict[str, torch.Tensor]:
    """The float32 tensors ``model`` reads from groups ``idx`` of ``block``, by input name."""
    arrays = {
        INPUT_INSTRUCTION: block.instructions,
        INPUT_CANDIDATES: block.candidates,
        INPUT_MEAN_CANDIDATES: block.mean_candidates,
        INPUT_SIGNALS: block.signals,
    }
    out: dict[str, torch.Tensor] = {}
    for name in model.input_names:
        array = arrays[name]
        if array is None:  # _check_data refuses such a dataset before any batch is drawn
            raise TrainingError(f"the ranker reads {name!r}, which this block lacks")
        out[name] = torch.from_numpy(np.ascontiguousarray(array[idx], dtype=np.float32))
    return out


def _labels(block: Block, idx: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(block.labels[idx]))


def _check_data(model: VectorRanker, data: GroupDataset, *, allow_empty: bool = False) -> None:
    """Refuse data that lacks a part the ranker reads, or has another feature size."""
    if data.num_groups == 0:
        if allow_empty:
            return
        raise TrainingError("nothing to train on: the dataset has no groups or pairs")
    if data.feature_size != model.feature_size:
        raise TrainingError(
            f"dataset features have {data.feature_size} values, ranker expects {model.feature_size}"
        )
    inputs = {"mean": INPUT_MEAN_CANDIDATES, "signals": INPUT_SIGNALS}
    for part in model.parts:
        lacking = [b for b in data.blocks if part not in b.parts]
        if part in inputs and lacking:
            groups = sum(len(b) for b in lacking)
            raise TrainingError(
                f"the ranker reads {inputs[part]!r} but {groups} of the dataset's "
                f"{data.num_groups} groups lack it (e.g. feedback recorded without it); "
                f"pass {inputs[part]}= for every group or train a ranker without {part!r}"
            )
    if isinstance(model, PartRanker) and "signals" in model.parts:
        want = model.representation.num_signals
        if data.num_signals != want:
            raise TrainingError(
                f"the dataset's signals have {data.num_signals} columns, the ranker reads "
                f"{want} ({', '.join(model.representation.signal_names[:3])}, ...)"
            )


# -- batches, losses, steps ---------------------------------------------------------------
def _all(data: GroupDataset) -> Indices:
    return [np.arange(len(b)) for b in data.blocks]


def _plan(
    data: GroupDataset, indices: Indices, config: TrainConfig, rng: np.random.Generator
) -> list[Batch]:
    """One epoch over ``indices``: shuffled (block index, group indices) batches, blocks mixed."""
    batches: list[Batch] = []
    for b, block in enumerate(data.blocks):
        order = rng.permutation(indices[b])
        size = _groups_per_batch(block, config.batch_candidates)
        batches += [(b, np.sort(order[s : s + size])) for s in range(0, len(order), size)]
    return [batches[i] for i in rng.permutation(len(batches))]


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
    scores = model(**_inputs(model, block, idx))
    labels = _labels(block, idx)
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


def _steps_per_epoch(data: GroupDataset, indices: Indices, config: TrainConfig) -> int:
    return sum(
        math.ceil(len(i) / _groups_per_batch(b, config.batch_candidates))
        for b, i in zip(data.blocks, indices, strict=True)
    )


def _fixed_epochs(data: GroupDataset, indices: Indices, config: TrainConfig) -> int:
    """Epochs of a fixed-length run: ``epochs`` (1 when unset), more to reach the steps."""
    per_epoch = max(_steps_per_epoch(data, indices, config), 1)
    epochs = 1 if config.epochs is None else config.epochs
    steps = config.min_steps if not config.early_stopping else config.steps_without_holdout
    return max(epochs, math.ceil(steps / per_epoch)) if steps > 0 else epochs


# -- the held-out slice -------------------------------------------------------------------
def _split(data: GroupDataset, config: TrainConfig) -> tuple[Indices, Indices] | None:
    """(train, held-out) group indices per block; None when too few groups to hold any out."""
    total = data.num_groups
    held = max(config.min_holdout_groups, round(config.holdout * total))
    if config.holdout <= 0 or total - held < max(held, 1):
        return None
    rng = np.random.default_rng([config.seed, 0x401D])  # its own stream: shuffles stay put
    chosen = np.zeros(total, dtype=bool)
    chosen[rng.choice(total, size=held, replace=False)] = True
    bounds = list(itertools.pairwise(np.cumsum([0, *(len(b) for b in data.blocks)])))
    train_idx = [np.flatnonzero(~chosen[s:e]) for s, e in bounds]
    held_idx = [np.flatnonzero(chosen[s:e]) for s, e in bounds]
    return train_idx, held_idx


def _fit_scaling(
    model: VectorRanker, data: GroupDataset, indices: Indices, config: TrainConfig
) -> None:
    """Standardise the signals on the training groups, unless the ranker already was."""
    if not (isinstance(model, PartRanker) and "signals" in model.parts):
        return
    if not config.fit_signal_scaling or model.signals_fitted:
        return
    rows = [
        b.signals[i].reshape(-1, b.num_signals)
        for b, i in zip(data.blocks, indices, strict=True)
        if b.signals is not None and len(i)
    ]
    if rows:
        model.fit_signal_scaling(np.concatenate(rows))


# -- training -----------------------------------------------------------------------------
def train(
    model: RankerModule, data: GroupDataset, config: TrainConfig | None = None
) -> TrainResult:
    """Train ``model`` in place on ``data``; returns per-step losses and timing.

    Early stopping by default (see the module docstring); a fixed length when
    ``config`` sets ``epochs`` or ``min_steps``. Takes list and point rankers
    reading any parts the dataset carries for every group; a SWIFT head
    (per-token features) is refused with a ``TrainingError`` pointing to
    ``edge.swift.train_swift``.
    """
    ranker = require_family(model, VectorRanker, "train", "train()")
    config = config or TrainConfig()
    _check_data(ranker, data)
    split = _split(data, config) if config.early_stopping else None
    train_idx = split[0] if split else _all(data)
    _fit_scaling(ranker, data, train_idx, config)
    run = _Run(ranker, data, train_idx, config)
    threads = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    ranker.train()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            if split is None:
                result = run.fixed(_fixed_epochs(data, train_idx, config))
            else:
                result = run.until_converged(split[1])
    finally:
        torch.set_num_threads(threads)
        run.bar.close()
        ranker.eval()
    return result


class _Run:
    """One call of ``train``: the optimiser, the shuffling stream and the losses so far."""

    def __init__(
        self, model: VectorRanker, data: GroupDataset, indices: Indices, config: TrainConfig
    ) -> None:
        self.model = model
        self.data = data
        self.indices = indices
        self.config = config
        self.mode = _binary_mode(model, config)
        self.optimizer = _optimizer(model, config)
        self.rng = np.random.default_rng(config.seed)
        self.losses: list[float] = []
        self.start = time.perf_counter()
        self.bar = tqdm(disable=not config.progress, desc="train")

    def epoch(self) -> None:
        """One shuffled pass over the training groups."""
        for b, idx in _plan(self.data, self.indices, self.config, self.rng):
            loss, n = block_loss(self.model, self.data.blocks[b], idx, self.mode)
            self.bar.update()
            if n == 0:
                continue
            self.losses.append(
                optimizer_step(self.model, self.optimizer, loss, self.config.max_grad_norm)
            )
            self.bar.set_postfix(loss=f"{self.losses[-1]:.4f}", refresh=False)

    def fixed(self, epochs: int) -> TrainResult:
        self.bar.total = epochs * _steps_per_epoch(self.data, self.indices, self.config)
        for _ in range(epochs):
            self.epoch()
        return TrainResult(len(self.losses), epochs, self.losses, self.elapsed)

    def until_converged(self, held: Indices) -> TrainResult:
        """Epochs until ``patience`` pass without a better held-out loss; the best restored."""
        config = self.config
        history = [self.held_out_loss(held)]
        best_epoch, best_state = 0, _copy_state(self.model)
        epochs = 0
        while epochs < config.max_epochs:
            self.epoch()
            epochs += 1
            history.append(self.held_out_loss(held))
            if history[-1] < history[best_epoch] - config.min_delta:
                best_epoch, best_state = epochs, _copy_state(self.model)
            elif epochs - best_epoch >= config.patience:
                break
        self.model.load_state_dict(best_state)
        return TrainResult(
            len(self.losses),
            epochs,
            self.losses,
            self.elapsed,
            holdout_losses=history,
            best_epoch=best_epoch,
            holdout_groups=sum(len(i) for i in held),
        )

    def held_out_loss(self, held: Indices) -> float:
        was_training = self.model.training
        self.model.eval()
        try:
            return _mean_loss(self.model, self.data, held, self.mode)
        finally:
            self.model.train(was_training)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def _copy_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# -- evaluation ---------------------------------------------------------------------------
def _eval_batches(data: GroupDataset, indices: Indices, batch_candidates: int) -> Iterator[Batch]:
    for b, block in enumerate(data.blocks):
        size = _groups_per_batch(block, batch_candidates)
        for s in range(0, len(indices[b]), size):
            yield b, indices[b][s : s + size]


@torch.no_grad()
def _mean_loss(model: VectorRanker, data: GroupDataset, indices: Indices, mode: str) -> float:
    total, count = 0.0, 0
    for b, idx in _eval_batches(data, indices, 4096):
        loss, n = block_loss(model, data.blocks[b], idx, mode)
        total += float(loss) * n
        count += n
    return total / count if count else math.nan


@torch.no_grad()
def evaluate_loss(
    model: RankerModule, data: GroupDataset, config: TrainConfig | None = None
) -> float:
    """Mean training loss over ``data`` without updating (weighted by groups)."""
    ranker = require_family(model, VectorRanker, "train", "evaluate_loss()")
    _check_data(ranker, data, allow_empty=True)
    mode = _binary_mode(ranker, config or TrainConfig())
    was_training = ranker.training
    ranker.eval()
    try:
        return _mean_loss(ranker, data, _all(data), mode)
    finally:
        ranker.train(was_training)


@torch.no_grad()
def top1_accuracy(model: RankerModule, data: GroupDataset) -> float:
    """Fraction of non-pair groups where the top-scored candidate has the best label.

    Pairs count as groups of two where the preferred one must win.
    """
    ranker = require_family(model, VectorRanker, "train", "top1_accuracy()")
    _check_data(ranker, data, allow_empty=True)
    was_training = ranker.training
    ranker.eval()
    hits, count = 0, 0
    try:
        for b, idx in _eval_batches(data, _all(data), 4096):
            block = data.blocks[b]
            labels = _labels(block, idx)
            best = ranker(**_inputs(ranker, block, idx)).argmax(-1)
            chosen = labels.gather(1, best[:, None]).squeeze(1)
            hits += int((chosen == labels.amax(-1)).sum())
            count += len(idx)
    finally:
        ranker.train(was_training)
    return hits / count if count else math.nan
