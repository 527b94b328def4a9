"""Per-token features through the edge client, and SWIFT end to end (gRPC -> train -> ONNX)."""

from __future__ import annotations

import numpy as np
import pytest

from edge import ServerError
from edge.runtime.client import CandidateTokens, CentralClient, Instruction
from edge.runtime.token_wire import TokenAssembler, TokenFeatureRequest, token_spec
from edge.swift.export import check_swift_parity, export_swift_onnx
from edge.swift.scoring import TokenRankingSession
from edge.swift.train import SwiftTrainConfig, TokenDataset, build_swift, train_swift
from edge.training.rankers import build_ranker, make_config
from language_ranker.v1 import ranker_pb2 as pb

PROMPTS = ["What is two plus three?", "Write a short poem.", "def add(a, b):", "List colours."]


@pytest.fixture()
def client(tiny_server):
    with CentralClient(f"127.0.0.1:{tiny_server.port}", timeout=60) as c:
        yield c


def test_requests_without_token_features_are_unchanged_on_the_wire() -> None:
    point = build_ranker(make_config("point", 64))
    with CentralClient("127.0.0.1:1") as unconnected:  # building a request needs no server
        build = unconnected.build_generate_request
        plain = build("hi", 3, seed=1).SerializeToString()
        for off in (None, False):
            assert build("hi", 3, seed=1, token_features=off).SerializeToString() == plain
        assert build("hi", 3, seed=1, ranker=point).SerializeToString() == plain
    assert token_spec(None) is None and token_spec(False) is None
    assert not pb.GenerateRequest.FromString(plain).HasField("token_features")


def test_last_token_rankers_never_ask_for_token_features(client) -> None:
    point = build_ranker(make_config("point", 64))
    assert TokenFeatureRequest.for_ranker(point) is None
    generation = client.generate(PROMPTS[0], k=3, max_new_tokens=6, seed=0, ranker=point)
    assert generation.token_features == []
    assert all(c.token_features is None for c in generation.candidates)


def test_generate_with_token_features(client) -> None:
    generation = client.generate(PROMPTS[1], k=3, max_new_tokens=10, seed=2, token_features=True)
    for c in generation.candidates:
        assert c.token_features is not None
        assert c.token_features.shape == (len(c.token_ids), 4 * 64)
        assert c.token_features.dtype == np.float32
    events = list(client.stream(PROMPTS[1], k=3, max_new_tokens=10, seed=2, token_features=True))
    assert isinstance(events[0], Instruction)
    assert events[0].token_layers == (1, 2, 3, 4) and events[0].token_feature_size == 256
    assert sum(isinstance(e, CandidateTokens) for e in events) == 3
    logits = client.generate(
        PROMPTS[1],
        k=2,
        max_new_tokens=5,
        seed=2,
        token_features=TokenFeatureRequest(top_logprobs=3),
    )
    assert all(c.token_features.shape[1] == 5 for c in logits.candidates)  # type: ignore[union-attr]


def test_assembler_rejects_out_of_order_chunks() -> None:
    assembler = TokenAssembler()
    tensor = pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=[2, 3], data=bytes(24))
    assert assembler.add(pb.TokenFeatures(index=0, token_offset=0, features=tensor)) is None
    assert assembler.pending == [0]
    with pytest.raises(ServerError, match="expected 2"):
        assembler.add(pb.TokenFeatures(index=0, token_offset=5, features=tensor))
    done = assembler.add(
        pb.TokenFeatures(index=0, token_offset=2, features=tensor, last_chunk=True)
    )
    assert done is not None and done.features.shape == (4, 3) and not assembler.pending


@pytest.mark.slow  # several seconds; CI runs it
def test_swift_end_to_end_through_grpc_and_onnx(client) -> None:
    """Generate with per-token features, train SWIFT on a label, export, rank with onnxruntime.

    The label (a response of at least 4 tokens) is one the per-token head can read
    from how many tokens there are; the point is the plumbing, not the model.
    """
    head = build_swift(4 * 64, layers=[1, 2, 3, 4], seed=0)
    generations = [
        client.generate(p, k=4, max_new_tokens=8, seed=s, ranker=head)
        for s in range(3)
        for p in PROMPTS
    ]
    tokens = [g.token_features for g in generations]
    labels = [[float(len(c.token_ids) >= 4) for c in g.candidates] for g in generations]
    result = train_swift(head, TokenDataset.from_lists(tokens, labels), SwiftTrainConfig(epochs=5))
    assert result.steps > 0
    onnx = export_swift_onnx(head)
    assert check_swift_parity(head, onnx, ((4, 8), (3, 1))).ok
    session = TokenRankingSession.load(onnx)
    assert TokenFeatureRequest.for_ranker(session) == TokenFeatureRequest(layers=(1, 2, 3, 4))
    fresh = client.generate(PROMPTS[0], k=4, max_new_tokens=8, seed=9, ranker=session)
    ranking = session.rank(fresh.token_features)
    assert sorted(ranking.order.tolist()) == [0, 1, 2, 3]
