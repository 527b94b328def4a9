"""SWIFT (arXiv 2505.12225) in the harness: per-token features, same candidates.

The candidate cache stores last-token features only, so SWIFT re-extracts
per-token features from the cached prompts and response texts with the same
code the service runs for a `TokenFeatureSpec` (`central.token_features`),
trains the head on the train pool, exports it to ONNX and scores the test
pool with onnxruntime: the same candidates, curves and intervals as every
other method. Two variants come out of one forward pass per batch:

- `SWIFT`: hidden states of the last 4 layers (the service default);
- `SWIFT (logits)`: logits-only mode, [log p, entropy, top-8 log-probs].

Fusion with the text reward model (`edge.eval.fusion`) is done by the caller,
which already has the reward model's scores.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ranker_eval.methods.base import MethodCost, PointwiseSelector
from ranker_eval.methods.data import Pool
from ranker_eval.tasks import Task

log = logging.getLogger(__name__)

SWIFT_NAMES = ("SWIFT", "SWIFT (logits)")


@dataclass(frozen=True)
class SwiftHarnessConfig:
    """How SWIFT is fitted inside the harness."""

    top_logprobs: int = 8  # logits-only mode: 2 + 8 values per token
    epochs: int = 40  # upper bound; early stopping on a held-out slice of train problems
    val_fraction: float = 0.2  # train problems held out for early stopping
    loss: str = "pointwise"  # BCE on the pooled score, as in the paper
    lr: float = 3e-3  # AdamW learning rate
    batch_size: int = 16  # responses per forward pass when extracting features


# Per problem, K arrays (T_k, D) float16.
TokenPool = list[list[np.ndarray]]


class _Extractor:
    """Loads the model once and turns a pool into per-token features (both kinds)."""

    def __init__(self, model: str, config: SwiftHarnessConfig, weights: str = "auto") -> None:
        self.model = model
        self.config = config
        self.weights = weights  # as the pools were generated (RunConfig.weights)
        self._loaded: Any = None

    def loaded(self) -> Any:
        if self._loaded is None:
            from central.model import load_model

            self._loaded = load_model(self.model, weights=self.weights)
        return self._loaded

    @torch.inference_mode()
    def check(self, pool: Pool, task: Task) -> None:
        """The cached top-layer instruction feature must be this model's (not a same-size one)."""
        from ranker_eval.generation import prompt_ids

        loaded = self.loaded()
        ids = prompt_ids(loaded, task, pool.problems[0])
        out = loaded.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
        mine = out.hidden_states[loaded.num_layers][0, -1].float().numpy()
        cached = pool.instruction[0, -1]
        error = np.linalg.norm(mine - cached) / max(np.linalg.norm(cached), 1e-6)
        if error > 0.05:
            raise ValueError(f"{loaded.name} does not reproduce the cached features ({error:.3f})")

    def features(self, pool: Pool, task: Task) -> tuple[TokenPool, TokenPool]:
        """(hidden-state, logits-only) per-token features of every candidate in `pool`."""
        from central.features import to_float16
        from central.prompting import response_ids
        from central.token_features import (
            TokenRequest,
            compute_token_features_many,
            default_token_layers,
        )
        from language_ranker.v1 import ranker_pb2 as pb
        from ranker_eval.generation import prompt_ids

        self.check(pool, task)
        loaded = self.loaded()
        requests = [
            TokenRequest(tuple(default_token_layers(loaded.num_layers)), 0, pb.ENCODING_FP16),
            TokenRequest((), self.config.top_logprobs, pb.ENCODING_FP16),
        ]
        hidden: TokenPool = []
        logits: TokenPool = []
        for problem, texts in zip(pool.problems, pool.texts, strict=True):
            prompt = prompt_ids(loaded, task, problem)
            responses = [response_ids(loaded, t) for t in texts]
            rows = [
                values
                for _, values in compute_token_features_many(
                    loaded, prompt, responses, requests, batch_size=self.config.batch_size
                )
            ]
            hidden.append([to_float16(h) for h, _ in rows])
            logits.append([to_float16(lg) for _, lg in rows])
        return hidden, logits


class SwiftMethods:
    """Fits both SWIFT variants for one model; call it per (train, test) pair of pools."""

    def __init__(
        self, model: str, weights: str = "auto", config: SwiftHarnessConfig | None = None
    ) -> None:
        self.config = config or SwiftHarnessConfig()
        self.extractor = _Extractor(model, self.config, weights)

    def __call__(
        self, train: Pool, test: Pool, task: Task, seed: int
    ) -> list[tuple[PointwiseSelector, MethodCost]]:
        start = time.perf_counter()
        train_hidden, train_logits = self.extractor.features(train, task)
        test_hidden, test_logits = self.extractor.features(test, task)
        extract_s = time.perf_counter() - start
        log.info("%s: per-token features extracted in %.1fs", task.name, extract_s)
        top = self.config.top_logprobs
        return [
            self._fit_and_score("SWIFT", train, train_hidden, test_hidden, seed, 0),
            self._fit_and_score("SWIFT (logits)", train, train_logits, test_logits, seed, top),
        ]

    def _fit_and_score(
        self,
        name: str,
        train: Pool,
        train_tokens: TokenPool,
        test_tokens: TokenPool,
        seed: int,
        top_logprobs: int,
    ) -> tuple[PointwiseSelector, MethodCost]:
        """Train on `train_tokens`, export to ONNX, score `test_tokens` with onnxruntime."""
        from central.token_features import default_token_layers
        from edge.swift.export import export_swift_onnx
        from edge.swift.scoring import TokenRankingSession
        from edge.swift.train import SwiftTrainConfig, TokenDataset, build_swift, train_swift

        config = self.config
        order = np.random.default_rng(seed).permutation(train.size)
        n_val = round(config.val_fraction * train.size) if train.size >= 5 else 0
        val, fit = order[:n_val], order[n_val:]
        data = TokenDataset.from_lists(
            [train_tokens[i] for i in fit], [train.labels[i] for i in fit]
        )
        held = TokenDataset.from_lists(
            [train_tokens[i] for i in val], [train.labels[i] for i in val]
        )
        num_layers = self.extractor.loaded().num_layers
        model = build_swift(
            data.feature_size,
            source="logits" if top_logprobs else "hidden",
            layers=[] if top_logprobs else default_token_layers(num_layers),
            top_logprobs=top_logprobs,
            seed=seed,
        )
        start = time.perf_counter()
        train_swift(
            model,
            data,
            SwiftTrainConfig(loss=config.loss, lr=config.lr, epochs=config.epochs, seed=seed),  # type: ignore[arg-type]
            validation=held if len(held) else None,
        )
        train_s = time.perf_counter() - start
        session = TokenRankingSession.load(export_swift_onnx(model))
        start = time.perf_counter()
        scores = np.stack([session.score(group) for group in test_tokens])
        score_s = time.perf_counter() - start
        return PointwiseSelector(name, scores), MethodCost(model.num_parameters(), train_s, score_s)
