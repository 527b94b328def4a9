"""LoRA-on-base reward model: the paper's strongest baseline, at CPU scale.

The base LLM that generated the candidates reads (prompt, response, EOS) and
a linear value head on the final hidden state of the EOS token gives the
score. Only low-rank adapters on the attention projections (LoRA, rank 8 on
q and v, every layer) and the head are trained, with BCE on the labels.
Unlike the rankers it must run the whole LLM again for every candidate at
scoring time, which is the cost the paper's comparison is about.

Two things make it affordable on a CPU. The K responses of a problem share
one prompt pass: the prompt is encoded once (with gradients, so the adapters
learn from it too) and its key/value cache is broadcast to a batch of
responses. And each step trains on a few candidates of one problem,
class-balanced where the problem has both kinds, for a fixed step budget
rather than epochs over every pair. The adapters are small modules written
here (about 20 lines), not a dependency.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from central.forward import cache_argument, returned_cache
from ranker_eval.methods.base import MethodCost, PointwiseSelector
from ranker_eval.methods.data import Pool
from ranker_eval.tasks import Task

log = logging.getLogger(__name__)

NAME = "LoRA RM"


@dataclass(frozen=True)
class LoraRewardConfig:
    """How the LoRA reward model is fitted."""

    rank: int = 8  # adapter rank
    alpha: float = 16.0  # adapter output is scaled by alpha / rank
    targets: tuple[str, ...] = ("q_proj", "v_proj")  # attention projections that get adapters
    steps: int = 120  # optimizer steps (one problem each)
    per_step: int = 8  # candidates of that problem per step, sharing one prompt pass
    lr: float = 1e-3  # AdamW learning rate for adapters and head
    max_response_tokens: int = 48  # longer responses are cut (their tail rarely decides)
    score_batch: int = 32  # responses per scoring pass
    skip_tasks: tuple[str, ...] = ("code",)  # too long to train on this CPU in the budget
    seed: int = 0  # adapter init, problem and candidate sampling


class LoraLinear(nn.Module):
    """`base(x) + (alpha / r) * B(A(x))` with `base` frozen and B starting at zero."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.down = nn.Linear(base.in_features, rank, bias=False)
        self.up = nn.Linear(rank, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)  # the adapted model starts as the base model
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * self.up(self.down(x))


def add_adapters(model: nn.Module, config: LoraRewardConfig) -> list[nn.Parameter]:
    """Freezes `model`, wraps every target projection; returns the trainable parameters."""
    for p in model.parameters():
        p.requires_grad_(False)
    trainable: list[nn.Parameter] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if name in config.targets and isinstance(child, nn.Linear):
                adapter = LoraLinear(child, config.rank, config.alpha)
                setattr(parent, name, adapter)
                trainable += [adapter.down.weight, adapter.up.weight]
    if not trainable:
        raise ValueError(f"no {config.targets} projections to adapt in {type(model).__name__}")
    return trainable


class LoraRewardModel(nn.Module):
    """The adapted base transformer plus a value head; scores responses to one prompt."""

    def __init__(self, loaded: Any, config: LoraRewardConfig) -> None:
        super().__init__()
        self.backbone = loaded.model.get_decoder()  # no LM head: the value head replaces it
        self.adapters = add_adapters(self.backbone, config)
        self.head = nn.Linear(loaded.hidden_size, 1)
        self.eos = int(min(loaded.eos_token_ids))

    def trainable(self) -> list[nn.Parameter]:
        return [*self.adapters, *self.head.parameters()]

    def forward(self, prompt: list[int], responses: list[list[int]]) -> torch.Tensor:
        """(len(responses),) scores; every response is read up to its appended EOS."""
        out = self.backbone(input_ids=torch.tensor([prompt]), use_cache=True)
        cache = returned_cache(out)
        cache.reorder_cache(torch.zeros(len(responses), dtype=torch.long))
        ended = [[*r, self.eos] for r in responses]
        longest = max(len(r) for r in ended)
        # Right padding after the EOS cannot change the positions before it (causal).
        batch = torch.tensor([r + [self.eos] * (longest - len(r)) for r in ended])
        hidden = self.backbone(
            input_ids=batch, **{cache_argument(self.backbone): cache}, use_cache=True
        )
        last = torch.tensor([len(r) - 1 for r in ended])
        final = hidden.last_hidden_state[torch.arange(len(ended)), last]
        return self.head(final).squeeze(-1)


class LoraRewardMethod:
    """Fits a fresh LoRA RM per (train, test) pair of pools of one model."""

    def __init__(self, model: str, config: LoraRewardConfig | None = None) -> None:
        self.model = model
        self.config = config or LoraRewardConfig()

    def __call__(
        self, train: Pool, test: Pool, task: Task, seed: int
    ) -> list[tuple[PointwiseSelector, MethodCost]]:
        if task.name in self.config.skip_tasks:
            log.info("LoRA RM skipped for %s", task.name)
            return []
        from central.model import load_model

        # A private dense copy: the adapters wrap its linears and train through them.
        loaded = load_model(self.model, weights="dense")
        torch.manual_seed(seed)
        rm = LoraRewardModel(loaded, self.config)
        total = sum(p.numel() for p in loaded.model.get_decoder().parameters())
        start = time.perf_counter()
        self._train(rm, loaded, train, task, np.random.default_rng(seed))
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        scores = self._score(rm, loaded, test, task)
        score_s = time.perf_counter() - start
        trainable = sum(p.numel() for p in rm.trainable())
        log.info(
            "LoRA RM %s: %d trainable of %d, train %.0fs", task.name, trainable, total, train_s
        )
        return [(PointwiseSelector(NAME, scores), MethodCost(total + trainable, train_s, score_s))]

    def _ids(
        self, loaded: Any, task: Task, pool: Pool, g: int
    ) -> tuple[list[int], list[list[int]]]:
        from central.prompting import response_ids
        from ranker_eval.generation import prompt_ids

        cut = self.config.max_response_tokens
        responses = [response_ids(loaded, t)[:cut] for t in pool.texts[g]]
        return prompt_ids(loaded, task, pool.problems[g]), responses

    def _pick(self, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Up to `per_step` candidates, half positive where the problem has both kinds."""
        n = self.config.per_step
        pos, neg = np.flatnonzero(labels > 0.5), np.flatnonzero(labels <= 0.5)
        take_pos = min(len(pos), max(n // 2, n - len(neg)))
        chosen = [*rng.permutation(pos)[:take_pos], *rng.permutation(neg)[: n - take_pos]]
        return np.array(chosen, dtype=np.int64)

    def _train(
        self, rm: LoraRewardModel, loaded: Any, pool: Pool, task: Task, rng: np.random.Generator
    ) -> None:
        optimizer = torch.optim.AdamW(rm.trainable(), lr=self.config.lr, weight_decay=0.0)
        loss_fn = nn.BCEWithLogitsLoss()
        mixed = np.flatnonzero((pool.labels.max(1) > 0.5) & (pool.labels.min(1) <= 0.5))
        problems = mixed if len(mixed) else np.arange(pool.size)  # all-same groups teach little
        rm.train()
        for _ in range(self.config.steps):
            g = int(rng.choice(problems))
            prompt, responses = self._ids(loaded, task, pool, g)
            chosen = self._pick(pool.labels[g], rng)
            scores = rm(prompt, [responses[k] for k in chosen])
            loss = loss_fn(scores, torch.from_numpy(pool.labels[g][chosen]).float())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    @torch.no_grad()
    def _score(self, rm: LoraRewardModel, loaded: Any, pool: Pool, task: Task) -> np.ndarray:
        rm.eval()
        out = np.zeros((pool.size, pool.k), dtype=np.float32)
        step = self.config.score_batch
        for g in range(pool.size):
            prompt, responses = self._ids(loaded, task, pool, g)
            for s in range(0, len(responses), step):
                out[g, s : s + step] = rm(prompt, responses[s : s + step]).numpy()
        return out
