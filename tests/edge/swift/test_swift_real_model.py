"""SWIFT end to end on the real default model (SmolLM2-135M-Instruct): gRPC -> train -> ONNX."""

from __future__ import annotations

import re

import numpy as np
import pytest

from central.server import ServerConfig, start_server
from edge.runtime.client import CentralClient, TokenFeatureRequest
from edge.swift.export import check_swift_parity, export_swift_onnx
from edge.swift.scoring import TokenRankingSession
from edge.swift.train import SwiftTrainConfig, TokenDataset, build_swift, train_swift

pytestmark = pytest.mark.slow

QUESTIONS = [(a, b) for a, b in ((7, 5), (12, 9), (23, 18), (6, 8), (31, 14), (9, 9))]


def _prompt(a: int, b: int) -> str:
    return f"What is {a} + {b}? Reply with the number only."


def _correct(text: str, a: int, b: int) -> float:
    numbers = re.findall(r"-?\d+", text)
    return float(bool(numbers) and int(numbers[0]) == a + b)


@pytest.fixture(scope="module")
def client(default_model):
    running = start_server(ServerConfig(port=0), loaded=default_model)
    with CentralClient(f"127.0.0.1:{running.port}", timeout=120) as c:
        yield c
    running.stop(grace=0)


@pytest.mark.parametrize("mode", ["hidden", "logits"])
def test_swift_trains_and_ranks_through_grpc_and_onnx(client, mode: str) -> None:
    info = client.info()
    assert info.default_token_layers == (27, 28, 29, 30)
    if mode == "hidden":
        head = build_swift(4 * info.hidden_size, layers=info.default_token_layers, seed=0)
    else:
        head = build_swift(10, source="logits", top_logprobs=8, seed=0)
    request = TokenFeatureRequest.for_ranker(head)
    assert request is not None
    generations = [
        client.generate(_prompt(a, b), k=4, max_new_tokens=8, temperature=1.0, seed=1, ranker=head)
        for a, b in QUESTIONS
    ]
    for g in generations:
        for c in g.candidates:
            assert c.token_features is not None
            assert c.token_features.shape == (len(c.token_ids), head.feature_size)
    labels = [
        [_correct(t, a, b) for t in g.texts]
        for g, (a, b) in zip(generations, QUESTIONS, strict=True)
    ]
    data = TokenDataset.from_lists([g.token_features for g in generations], labels)
    result = train_swift(head, data, SwiftTrainConfig(epochs=10))
    assert result.steps > 0 and np.isfinite(result.losses).all()
    onnx = export_swift_onnx(head)
    assert check_swift_parity(head, onnx, ((4, 8), (2, 3))).ok
    session = TokenRankingSession.load(onnx)
    fresh = client.generate(_prompt(15, 27), k=4, max_new_tokens=8, seed=2, ranker=session)
    ranking = session.rank(fresh.token_features)
    assert sorted(ranking.order.tolist()) == [0, 1, 2, 3]
    assert np.isfinite(ranking.scores).all()
