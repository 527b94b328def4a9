"""Training a SWIFT head on per-token features (torch).

The Language Ranker trainer (``edge.training.loop``) batches fixed-size vectors in
blocks of equal K; per-token features are ragged twice over (K per group, T
per candidate), so SWIFT gets its own small dataset and loop: groups are
bucketed by K, and each batch is padded only to its own longest candidate,
which keeps short-answer tasks cheap even when one response ran long.

Losses (SWIFT trains on per-candidate correctness labels):
- ``pointwise`` (the paper's default): BCE of sigmoid(score) per candidate;
- ``pairwise``: logistic loss over every (correct, wrong) pair in a group;
- ``listwise``: the Language Ranker KL over the group (``edge.training.losses``).

Early stopping on an optional validation set keeps the best weights, as the
paper does; everything random flows from ``SwiftTrainConfig.seed``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from edge._errors import MissingDependencyError

try:
    import torch
except ImportError as error:  # a torch-free install: say which extra provides it
    raise MissingDependencyError("edge.swift.train", "torch", "train") from error
import torch.nn.functional as F

from edge._errors import FeatureError, TrainingError
from edge.app.dataset import training_features
from edge.runtime.features import check_finite
from edge.swift.head import SwiftConfig, SwiftRanker, TokenSource
from edge.swift.tokens import pad_groups
from edge.training.loop import optimizer_step
from edge.training.losses import listwise_kl, pointwise_bce
from edge.training.rankers import RankerModule, require_family

__all__ = [
    "SwiftTrainConfig",
    "SwiftTrainResult",
    "TokenDataset",
    "TokenGroup",
    "batch_loss",
    "build_swift",
    "evaluate_swift_loss",
    "score_groups",
    "swift_top1",
    "train_swift",
]

SwiftLoss = Literal["pointwise", "pairwise", "listwise"]


@dataclass(frozen=True)
class TokenGroup:
    """One prompt's K candidates as ragged per-token features, with one label each."""

    tokens: tuple[np.ndarray, ...]  # K arrays (T_k, d), float16 or float32
    labels: np.ndarray  # (K,) float32, 1.0 for a correct candidate


@dataclass
class TokenDataset:
    """Groups of per-token candidate features sharing one token feature size d."""

    groups: list[TokenGroup] = field(default_factory=list)

    def __post_init__(self) -> None:
        sizes = {t.shape[1] for g in self.groups for t in g.tokens}
        if len(sizes) > 1:
            raise FeatureError(f"dataset mixes token feature sizes {sorted(sizes)}")

    @classmethod
    def from_lists(
        cls, tokens: Sequence[Sequence[np.ndarray]], labels: Sequence[Sequence[float]]
    ) -> TokenDataset:
        """Build from per-group lists of (T_k, d) arrays and per-group label lists."""
        groups = []
        for i, (cands, labs) in enumerate(zip(tokens, labels, strict=True)):
            arrays = tuple(_token_array(c, f"group {i} candidate {k}") for k, c in enumerate(cands))
            lab = np.asarray(labs, dtype=np.float32)
            if lab.shape != (len(arrays),):
                raise FeatureError(f"group {i}: {len(arrays)} candidates, labels {lab.shape}")
            check_finite(lab, f"group {i} labels")
            groups.append(TokenGroup(arrays, lab))
        return cls(groups)

    @property
    def feature_size(self) -> int:
        for g in self.groups:
            for t in g.tokens:
                return int(t.shape[1])
        raise TrainingError("dataset is empty: it has no token feature size")

    def __len__(self) -> int:
        return len(self.groups)

    def token_rows(self, limit: int = 200_000, seed: int = 0) -> np.ndarray:
        """Up to ``limit`` real token rows (N, d), sampled evenly: for fitting normalisation."""
        rows = np.concatenate([t for g in self.groups for t in g.tokens if len(t)])
        if len(rows) > limit:
            rows = rows[np.random.default_rng(seed).choice(len(rows), limit, replace=False)]
        return rows.astype(np.float32)

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Padded (B, K, T, d) tokens, (B, K, T) mask and (B, K) labels; equal K required."""
        picked = [self.groups[i] for i in indices]
        tokens, mask = pad_groups([g.tokens for g in picked])
        labels = np.stack([g.labels for g in picked])
        return torch.from_numpy(tokens), torch.from_numpy(mask), torch.from_numpy(labels)


def _token_array(array: object, what: str) -> np.ndarray:
    out = np.asarray(array)
    if out.ndim != 2:
        raise FeatureError(
            f"{what}: expected a float (tokens, d) array, got {out.dtype} {out.shape}"
        )
    return training_features(out, what)


@dataclass(frozen=True)
class SwiftTrainConfig:
    """How to train SWIFT; defaults learn a planted signal without tuning."""

    loss: SwiftLoss = "pointwise"  # BCE on the pooled score (paper); or pairwise / listwise
    lr: float = 3e-3  # AdamW learning rate (paper: 1e-4 on far larger data)
    weight_decay: float = 1e-4  # decoupled weight decay
    batch_candidates: int = 64  # candidates per step (groups packed up to this many)
    epochs: int = 20  # upper bound on passes; early stopping may end sooner
    min_steps: int = 0  # run extra epochs until at least this many steps
    patience: int = 3  # epochs without validation improvement before stopping
    max_grad_norm: float | None = 1.0  # gradient clipping; None disables it
    normalize: bool = True  # fit per-dimension standardisation on the training tokens
    seed: int = 0  # shuffling seed; same seed + data -> same weights
    num_threads: int | None = 1  # torch threads while training (shared 2-core devices)


@dataclass
class SwiftTrainResult:
    """What happened during training."""

    steps: int  # optimizer steps taken
    epochs: int  # passes over the data actually run
    best_epoch: int  # epoch whose weights were kept (last one without validation)
    losses: list[float] = field(repr=False)  # training loss per step
    val_losses: list[float] = field(repr=False)  # validation loss per epoch (empty without)
    seconds: float  # wall-clock time of the loop


def build_swift(
    feature_size: int,
    *,
    source: TokenSource = "hidden",
    layers: Sequence[int] = (),
    top_logprobs: int = 0,
    seed: int = 0,
) -> SwiftRanker:
    """A freshly initialised SWIFT head; the same seed always gives the same weights."""
    config = SwiftConfig(feature_size, source, tuple(layers), top_logprobs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SwiftRanker(config)


def _batches(
    data: TokenDataset, batch_candidates: int, rng: np.random.Generator | None
) -> Iterator[list[int]]:
    """Groups bucketed by K, packed to ``batch_candidates``; shuffled when ``rng`` is given."""
    by_k: dict[int, list[int]] = {}
    for i, g in enumerate(data.groups):
        by_k.setdefault(len(g.tokens), []).append(i)
    batches: list[list[int]] = []
    for k, members in sorted(by_k.items()):
        order = rng.permutation(members).tolist() if rng is not None else members
        size = max(1, batch_candidates // k)
        batches += [order[s : s + size] for s in range(0, len(order), size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    yield from batches


def _pairwise(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean ``softplus(-(s_pos - s_neg))`` over every (better, worse) pair of each group."""
    better = labels.unsqueeze(-1) > labels.unsqueeze(-2)  # (B, K, K): row beats column
    n = int(better.sum())
    if n == 0:
        return scores.sum() * 0.0, 0
    margin = scores.unsqueeze(-1) - scores.unsqueeze(-2)
    return F.softplus(-margin[better]).mean(), int(better.any(-1).any(-1).sum())


def batch_loss(
    model: RankerModule, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], loss: SwiftLoss
) -> tuple[torch.Tensor, int]:
    """Loss of one padded batch and how many groups carried signal."""
    model = require_family(model, SwiftRanker, "train", "batch_loss()")
    tokens, mask, labels = batch
    scores = model(tokens, mask)
    if loss == "pairwise":
        return _pairwise(scores, labels)
    if loss == "listwise":
        return listwise_kl(scores, labels)
    return pointwise_bce(scores, labels)


def evaluate_swift_loss(
    model: RankerModule, data: TokenDataset, config: SwiftTrainConfig | None = None
) -> float:
    """Mean training loss (``config.loss``) over ``data``, weighted by groups, without updating."""
    model = require_family(model, SwiftRanker, "train", "evaluate_swift_loss()")
    config = config or SwiftTrainConfig()
    was_training = model.training
    model.eval()
    try:
        return _mean_loss(model, data, config)
    finally:
        model.train(was_training)


@torch.no_grad()
def _mean_loss(model: SwiftRanker, data: TokenDataset, config: SwiftTrainConfig) -> float:
    total, count = 0.0, 0
    for idx in _batches(data, config.batch_candidates, None):
        value, n = batch_loss(model, data.batch(idx), config.loss)
        total += float(value) * n
        count += n
    return total / count if count else math.nan


def train_swift(
    model: RankerModule,
    data: TokenDataset,
    config: SwiftTrainConfig | None = None,
    *,
    validation: TokenDataset | None = None,
) -> SwiftTrainResult:
    """Train ``model`` in place; with ``validation``, keep the best epoch (early stopping).

    A list or point ranker is refused with a ``TrainingError`` pointing to
    ``edge.training.train``.
    """
    model = require_family(model, SwiftRanker, "train", "train_swift()")
    config = config or SwiftTrainConfig()
    if not len(data):
        raise TrainingError("nothing to train on: the token dataset has no groups")
    if data.feature_size != model.feature_size:
        raise TrainingError(
            f"token features have {data.feature_size} values, SWIFT head expects "
            f"{model.feature_size}"
        )
    if config.normalize:
        model.fit_normalization(data.token_rows(seed=config.seed))
    threads = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    try:
        return _loop(model, data, config, validation)
    finally:
        torch.set_num_threads(threads)
        model.eval()


def _loop(
    model: SwiftRanker,
    data: TokenDataset,
    config: SwiftTrainConfig,
    validation: TokenDataset | None,
) -> SwiftTrainResult:
    rng = np.random.default_rng(config.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    losses: list[float] = []
    val_losses: list[float] = []
    best = (math.inf, 0, copy.deepcopy(model.state_dict()))
    start = time.perf_counter()
    epoch = 0
    while epoch < config.epochs or len(losses) < config.min_steps:
        epoch += 1
        model.train()
        for idx in _batches(data, config.batch_candidates, rng):
            loss, n = batch_loss(model, data.batch(idx), config.loss)
            if n == 0:
                continue
            losses.append(optimizer_step(model, optimizer, loss, config.max_grad_norm))
        if validation is None or not len(validation):
            continue
        model.eval()
        val_losses.append(_mean_loss(model, validation, config))
        if val_losses[-1] < best[0]:
            best = (val_losses[-1], epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= config.patience and len(losses) >= config.min_steps:
            break
    best_epoch = epoch
    if val_losses and math.isfinite(best[0]):
        model.load_state_dict(best[2])
        best_epoch = best[1]
    return SwiftTrainResult(
        len(losses), epoch, best_epoch, losses, val_losses, time.perf_counter() - start
    )


@torch.no_grad()
def score_groups(
    model: RankerModule, data: TokenDataset, batch_candidates: int = 256
) -> list[np.ndarray]:
    """(K,) float32 scores per group, in dataset order (torch; the runtime does the same)."""
    model = require_family(model, SwiftRanker, "train", "score_groups()")
    was_training = model.training
    model.eval()
    out: list[np.ndarray | None] = [None] * len(data)
    for idx in _batches(data, batch_candidates, None):
        tokens, mask, _ = data.batch(idx)
        for i, row in zip(idx, model(tokens, mask).numpy(), strict=True):
            out[i] = row.astype(np.float32)
    model.train(was_training)
    return [s for s in out if s is not None]


def swift_top1(model: RankerModule, data: TokenDataset) -> float:
    """Fraction of groups whose top-scored candidate has the group's best label."""
    scores = score_groups(model, data)
    hits = [
        float(g.labels[int(np.argmax(s))] == g.labels.max())
        for g, s in zip(data.groups, scores, strict=True)
    ]
    return float(np.mean(hits)) if hits else math.nan
