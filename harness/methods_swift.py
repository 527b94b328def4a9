"""SWIFT in the quality harness, through the hook in ``harness.methods.swift``.

The candidate cache stores last-token features only, so SWIFT re-extracts
per-token features from the cached prompts and response texts with the same
code the service runs for a ``TokenFeatureSpec`` (``central.token_features``),
trains the head on the train pool, exports it to ONNX and scores the test
pool with onnxruntime: the same candidates, curves and intervals as every
other method. Registered methods:

- ``SWIFT``: hidden states of the last 4 layers (the service default);
- ``SWIFT (logits)``: logits-only mode, [log p, entropy, top-8 log-probs];
- ``SWIFT+RM (rank)`` / ``SWIFT+RM (minmax)``: fusion with the text reward
  model (``edge.fusion``), when its encoder package is installed.

Run the report with SWIFT included (same flags as ``ranker-eval``)::

    python -m harness.methods_swift --phase evaluate --jobs 1 [--model default] ...

``--jobs 1`` matters: the registration lives in this process, and worker
processes that ``--jobs N`` spawns would not see it. The pools do not name
their model, so it is found by hidden size (``SwiftHarnessConfig.models``) and
checked against the cached instruction features before any feature is used.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from harness.methods.base import MethodCost, PointwiseSelector
from harness.methods.data import Pool
from harness.methods.swift import register

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SwiftHarnessConfig:
    """How SWIFT is fitted inside the harness."""

    # hidden size of the cached features -> model to re-extract per-token features with
    models: dict[int, str] = field(default_factory=lambda: {576: "default", 640: "gemma3-270m"})
    top_logprobs: int = 8  # logits-only mode: 2 + 8 values per token
    epochs: int = 40  # upper bound; early stopping on a held-out slice of train problems
    val_fraction: float = 0.2  # train problems held out for early stopping
    loss: str = "pointwise"  # BCE on the pooled score, as in the paper
    lr: float = 3e-3  # AdamW learning rate
    rm_epochs: int = 2  # text RM for fusion: as RunConfig.rm_epochs in the FULL preset
    rm_max_pairs: int = 512  # text RM for fusion: as RunConfig.rm_max_pairs in FULL
    fusion: bool = True  # also register SWIFT+RM fusions
    batch_size: int = 16  # responses per forward pass when extracting features


_TASK_PREFIX = {"math": "math", "function": "function", "sentiment": "sentiment"}


def _pool_key(pool: Pool) -> str:
    """Identifies a pool by content: ids of freed pools get reused, uids repeat across models."""
    digest = hashlib.sha1(np.ascontiguousarray(pool.instruction).tobytes())
    digest.update("|".join(p.uid for p in pool.problems).encode())
    return digest.hexdigest()


def _task_name(uid: str) -> str:
    prefix = uid.split("-", 1)[0]
    return _TASK_PREFIX.get(prefix, "code")


class _Extractor:
    """Loads each model once and turns a pool into per-token features."""

    def __init__(self, config: SwiftHarnessConfig) -> None:
        self.config = config
        self._models: dict[str, Any] = {}
        self._memo: dict[tuple[str, int], list[list[np.ndarray]]] = {}

    def model_for(self, pool: Pool) -> Any:
        from central.model import load_model

        hidden = int(pool.instruction.shape[-1])
        name = self.config.models.get(hidden)
        if name is None:
            raise ValueError(f"no model configured for hidden size {hidden}")
        if name not in self._models:
            self._models[name] = load_model(name)
        loaded = self._models[name]
        self._check(loaded, pool)
        return loaded

    @torch.inference_mode()
    def _check(self, loaded: Any, pool: Pool) -> None:
        """The cached top-layer instruction feature must be this model's (not a same-size one)."""
        from harness.generation import prompt_ids
        from harness.tasks import get_task

        problem = pool.problems[0]
        ids = prompt_ids(loaded, get_task(_task_name(problem.uid)), problem)
        out = loaded.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
        mine = out.hidden_states[loaded.num_layers][0, -1].float().numpy()
        cached = pool.instruction[0, -1]
        error = np.linalg.norm(mine - cached) / max(np.linalg.norm(cached), 1e-6)
        if error > 0.05:
            raise ValueError(f"{loaded.name} does not reproduce the cached features ({error:.3f})")

    def features(self, pool: Pool, top_logprobs: int) -> list[list[np.ndarray]]:
        """Per problem, K arrays (T_k, D) float16: hidden states (0) or logits-only (k > 0).

        Both kinds come from one forward pass per batch and are kept for the
        pool, so the second SWIFT variant costs no extra pass.
        """
        key = (_pool_key(pool), top_logprobs)
        if key not in self._memo:
            if len(self._memo) >= 4:  # a task's train and test pools, in both modes
                for old in list(self._memo)[:2]:
                    self._memo.pop(old)
            hidden, logits = self._extract(pool)
            self._memo[(key[0], 0)] = hidden
            self._memo[(key[0], self.config.top_logprobs)] = logits
        return self._memo[key]

    def _extract(self, pool: Pool) -> tuple[list[list[np.ndarray]], list[list[np.ndarray]]]:
        from central.prompting import response_ids
        from central.token_features import TokenRequest, compute_token_features_many
        from central.token_features import default_token_layers as layers_for
        from harness.generation import prompt_ids
        from harness.tasks import get_task
        from language_ranker.v1 import ranker_pb2 as pb

        loaded = self.model_for(pool)
        requests = [
            TokenRequest(tuple(layers_for(loaded.num_layers)), 0, pb.ENCODING_FP16),
            TokenRequest((), self.config.top_logprobs, pb.ENCODING_FP16),
        ]
        hidden: list[list[np.ndarray]] = []
        logits: list[list[np.ndarray]] = []
        for problem, texts in zip(pool.problems, pool.texts, strict=True):
            prompt = prompt_ids(loaded, get_task(_task_name(problem.uid)), problem)
            responses = [response_ids(loaded, t) for t in texts]
            rows = [
                values
                for _, values in compute_token_features_many(
                    loaded, prompt, responses, requests, batch_size=self.config.batch_size
                )
            ]
            hidden.append([h.astype(np.float16) for h, _ in rows])
            logits.append([lg.astype(np.float16) for _, lg in rows])
        return hidden, logits


def _fit_and_score(
    extractor: _Extractor, train: Pool, test: Pool, seed: int, top_logprobs: int
) -> tuple[np.ndarray, MethodCost]:
    """Train SWIFT on ``train``, export to ONNX, score ``test`` with onnxruntime."""
    from edge.swift_export import export_swift_onnx
    from edge.swift_runtime import TokenRankingSession
    from edge.swift_train import SwiftTrainConfig, TokenDataset, build_swift, train_swift

    config = extractor.config
    start = time.perf_counter()
    train_tokens = extractor.features(train, top_logprobs)
    test_tokens = extractor.features(test, top_logprobs)
    extract_s = time.perf_counter() - start
    order = np.random.default_rng(seed).permutation(train.size)
    n_val = round(config.val_fraction * train.size) if train.size >= 5 else 0
    val, fit = order[:n_val], order[n_val:]
    data = TokenDataset.from_lists([train_tokens[i] for i in fit], [train.labels[i] for i in fit])
    held = TokenDataset.from_lists([train_tokens[i] for i in val], [train.labels[i] for i in val])
    d = data.feature_size
    loaded = extractor.model_for(train)
    layers = [] if top_logprobs else [int(x) for x in _layers(loaded.num_layers)]
    model = build_swift(
        d,
        source="logits" if top_logprobs else "hidden",
        layers=layers,
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
    log.info("SWIFT top%d: extract %.1fs train %.1fs", top_logprobs, extract_s, train_s)
    return scores, MethodCost(model.num_parameters(), train_s, score_s)


def _layers(num_layers: int) -> list[int]:
    from central.token_features import default_token_layers

    return default_token_layers(num_layers)


class _Methods:
    """The registered factories; results are memoised per (train, test) pair of pools."""

    def __init__(self, config: SwiftHarnessConfig) -> None:
        self.config = config
        self.extractor = _Extractor(config)
        self._swift: dict[tuple[str, int, int], tuple[np.ndarray, MethodCost]] = {}
        self._rm: dict[tuple[str, int], tuple[np.ndarray, MethodCost] | None] = {}

    def swift(self, train: Pool, test: Pool, seed: int, top: int) -> tuple[np.ndarray, MethodCost]:
        key = (_pool_key(train) + _pool_key(test), seed, top)
        if key not in self._swift:
            self._swift = {k: v for k, v in self._swift.items() if k[0] == key[0]}
            self._swift[key] = _fit_and_score(self.extractor, train, test, seed, top)
        return self._swift[key]

    def rm_scores(self, train: Pool, test: Pool, seed: int) -> np.ndarray | None:
        """The text RM's test scores (fit as the FULL preset fits it); None without its encoder."""
        fitted = self._fit_rm(train, test, seed)
        return None if fitted is None else fitted[0]

    def _fit_rm(self, train: Pool, test: Pool, seed: int) -> tuple[np.ndarray, MethodCost] | None:
        from harness.methods.reward_model import RewardModelConfig, fit_reward_model

        key = (_pool_key(train) + _pool_key(test), seed)
        if key not in self._rm:
            config = RewardModelConfig(
                epochs=self.config.rm_epochs, max_pairs=self.config.rm_max_pairs, seed=seed
            )
            rm = fit_reward_model(train, config)
            self._rm = {key: None if rm is None else (rm.score(test).scores, rm.cost)}
        return self._rm[key]

    def hidden(self, train: Pool, test: Pool, seed: int) -> tuple[PointwiseSelector, MethodCost]:
        scores, cost = self.swift(train, test, seed, 0)
        return PointwiseSelector("SWIFT", scores), cost

    def logits(self, train: Pool, test: Pool, seed: int) -> tuple[PointwiseSelector, MethodCost]:
        scores, cost = self.swift(train, test, seed, self.config.top_logprobs)
        return PointwiseSelector("SWIFT (logits)", scores), cost

    def fused(self, method: str) -> Any:
        def factory(train: Pool, test: Pool, seed: int) -> tuple[PointwiseSelector, MethodCost]:
            from edge.fusion import minmax_fusion, rank_fusion

            scores, cost = self.swift(train, test, seed, 0)
            fitted = self._fit_rm(train, test, seed)
            if fitted is None:  # no encoder package: fusion degenerates to SWIFT alone
                return PointwiseSelector(f"SWIFT+RM ({method})", scores), cost
            rm, rm_cost = fitted
            fused = rank_fusion(scores, rm) if method == "rank" else minmax_fusion(scores, rm)
            both = MethodCost(
                cost.params + rm_cost.params,
                cost.train_s + rm_cost.train_s,
                cost.score_s + rm_cost.score_s,
            )
            return PointwiseSelector(f"SWIFT+RM ({method})", fused), both

        return factory


def install(config: SwiftHarnessConfig | None = None) -> None:
    """Registers the SWIFT methods for every subsequent harness evaluation in this process."""
    methods = _Methods(config or SwiftHarnessConfig())
    register("SWIFT", methods.hidden)
    register("SWIFT (logits)", methods.logits)
    if methods.config.fusion:
        register("SWIFT+RM (rank)", methods.fused("rank"))
        register("SWIFT+RM (minmax)", methods.fused("minmax"))


def main(argv: list[str] | None = None) -> int:
    """``ranker-eval`` with SWIFT registered (same flags; use ``--jobs 1``)."""
    from harness.cli import main as ranker_eval

    args = sys.argv[1:] if argv is None else argv
    if "--jobs" in args and args[args.index("--jobs") + 1] != "1":
        raise SystemExit("SWIFT is registered in this process only: run with --jobs 1")
    install()
    return ranker_eval(args)


if __name__ == "__main__":
    sys.exit(main())
