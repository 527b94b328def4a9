"""The edge client against a real central server on loopback (tiny model)."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from central.forward import empty_response_tokens
from central.prompting import render_prompt, response_ids
from central.server import ServerConfig, start_server
from edge._errors import (
    ConnectionLostError,
    DeadlineExceededError,
    InvalidRequestError,
    ServerError,
)
from edge.runtime.client import CentralClient, Instruction
from edge.runtime.types import Candidate
from language_ranker.v1 import ranker_pb2 as pb


@pytest.fixture()
def client(tiny_server):
    with CentralClient(f"127.0.0.1:{tiny_server.port}", timeout=30) as c:
        yield c


def test_info(client) -> None:
    info = client.info()
    assert (info.num_layers, info.hidden_size, info.max_k) == (4, 64, 64)
    assert set(info.encodings) == {"fp16", "fp32", "int8"}
    assert info.feature_vectors == ("last", "mean", "embedding_mean")


def test_generate_returns_k_candidates_with_numpy_features(client) -> None:
    generation = client.generate("What is two plus three?", k=5, max_new_tokens=8, seed=0)
    assert [c.index for c in generation.candidates] == [0, 1, 2, 3, 4]
    assert generation.instruction.shape == (64,) and generation.instruction.dtype == np.float32
    assert generation.features.shape == (5, 64)
    assert generation.layer_index == 2
    assert all(c.finish_reason in ("eos", "length") for c in generation.candidates)


def test_stream_yields_the_instruction_first_then_candidates_as_they_finish(client) -> None:
    events = list(client.stream("Write a poem", k=6, max_new_tokens=8, seed=3))
    assert isinstance(events[0], Instruction)
    assert all(isinstance(e, Candidate) for e in events[1:]) and len(events) == 7
    lengths = [len(e.token_ids) + (e.finish_reason == "length") for e in events[1:]]
    assert lengths == sorted(lengths)


@pytest.mark.parametrize("encoding", ["fp32", "int8"])
def test_encodings_decode_close_to_fp16(client, encoding: str) -> None:
    base = client.generate("Write a poem", k=2, max_new_tokens=4, seed=1, encoding="fp32")
    other = client.generate("Write a poem", k=2, max_new_tokens=4, seed=1, encoding=encoding)
    scale = np.abs(base.features).max()
    assert np.abs(base.features - other.features).max() <= scale / 127


def test_chat_prompt_and_explicit_layer(client) -> None:
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    generation = client.generate(chat, k=1, max_new_tokens=4, layer=4)
    assert generation.layer_index == 4
    fraction = client.generate("Hi", k=1, max_new_tokens=4, layer=0.25)
    assert fraction.layer_index == 1


def test_features_for_given_responses(client) -> None:
    instruction, features = client.features("List colours", ["red", "green and blue"])
    assert instruction.shape == (64,) and features.shape == (2, 64)
    assert not np.allclose(features[0], features[1])


def _plain_pass(model, prompt: str, fed: list[int]):
    ids = render_prompt(model, pb.Prompt(text=prompt))
    with torch.inference_mode():
        out = model.model(torch.tensor([ids + fed]), output_hidden_states=True)
    return [h[0, len(ids) :].numpy() for h in out.hidden_states]


def _assert_fp16_close(got: np.ndarray | None, want: np.ndarray) -> None:
    """Within fp16's rounding (the default encoding) of the largest value."""
    assert got is not None
    np.testing.assert_allclose(got, want, atol=1e-3 * np.abs(want).max())


def test_candidates_carry_the_embedding_mean_when_asked(client, tiny_model) -> None:
    prompt, every = "Write a poem", ("last", "mean", "embedding_mean")
    generation = client.generate(prompt, k=4, max_new_tokens=6, seed=2, vectors=every)
    for c in generation.candidates:
        assert c.embedding_mean_feature is not None
        assert c.embedding_mean_feature.dtype == np.float32
        assert c.embedding_mean_feature.shape == (64,)
        states = _plain_pass(
            tiny_model, prompt, list(c.token_ids) or empty_response_tokens(tiny_model)
        )
        _assert_fp16_close(c.embedding_mean_feature, states[0].mean(0))
        _assert_fp16_close(c.mean_feature, states[2].mean(0))
    plain = client.generate(prompt, k=4, max_new_tokens=6, seed=2)
    assert all(c.embedding_mean_feature is None for c in plain.candidates)
    alone = client.generate(prompt, k=2, max_new_tokens=6, seed=2, vectors=("embedding_mean",))
    for c in alone.candidates:
        assert c.feature.shape == (0,) and c.mean_feature is None
        assert c.embedding_mean_feature is not None


def test_response_vectors_for_given_responses(client, tiny_model) -> None:
    texts = ["red", "green and blue", ""]
    every = ("last", "mean", "embedding_mean")
    got = client.response_vectors("List colours", texts, vectors=every, mean_entropy=True)
    assert got.instruction.shape == (64,) and got.layer_index == 2
    for array in (got.last, got.mean, got.embedding_mean):
        assert array is not None and array.shape == (3, 64) and array.dtype == np.float32
    assert got.mean_entropy is not None and got.mean_entropy.shape == (3,)
    for row, text in enumerate(texts):
        fed = response_ids(tiny_model, text) or empty_response_tokens(tiny_model)
        states = _plain_pass(tiny_model, "List colours", fed)
        _assert_fp16_close(got.embedding_mean[row], states[0].mean(0))
        _assert_fp16_close(got.last[row], states[2][-1])
    _, last = client.features("List colours", texts)
    np.testing.assert_array_equal(got.last, last)  # the same pass, the same bytes
    only = client.response_vectors("List colours", texts, vectors=("embedding_mean",))
    assert only.last is None and only.mean is None and only.mean_entropy is None
    np.testing.assert_array_equal(only.embedding_mean, got.embedding_mean)
    none = client.response_vectors("List colours", [], vectors=every)
    assert none.embedding_mean is not None and none.embedding_mean.shape == (0, 64)


def test_an_unknown_vector_name_is_refused_before_any_call(client) -> None:
    with pytest.raises(
        ValueError, match=r"vectors must be among \['embedding_mean', 'last', 'mean'\]"
    ):
        client.generate("hi", k=1, vectors=("embeddings",))
    with pytest.raises(ValueError, match="vectors must be among"):
        client.response_vectors("hi", ["x"], vectors=("first",))


def test_invalid_request_raises_invalid_request_error_naming_the_field(client) -> None:
    with pytest.raises(InvalidRequestError, match=r"^k: must be between 1 and 64"):
        client.generate("hi", k=100)
    with pytest.raises(InvalidRequestError, match=r"sampling\.temperature"):
        client.generate("hi", k=1, temperature=-1.0)


def test_deadline_raises_deadline_exceeded(client) -> None:
    with pytest.raises(DeadlineExceededError):
        client.generate("Write a poem", k=32, max_new_tokens=200, timeout=0.01)


def test_unreachable_server_raises_connection_lost() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    with CentralClient(f"127.0.0.1:{port}", timeout=5) as client:
        with pytest.raises(ConnectionLostError):
            client.info()
        with pytest.raises(ConnectionLostError):
            client.wait_ready(timeout=0.5)


def test_token_is_sent_as_bearer_and_a_wrong_token_is_a_server_error(tiny_model) -> None:
    running = start_server(ServerConfig(port=0, auth_token="tok"), loaded=tiny_model)
    try:
        with CentralClient(f"127.0.0.1:{running.port}", token="tok") as good:
            assert good.info().hidden_size == 64
        with (
            CentralClient(f"127.0.0.1:{running.port}", token="bad") as bad,
            pytest.raises(ServerError, match="UNAUTHENTICATED"),
        ):
            bad.info()
    finally:
        running.stop(grace=0)


def test_breaking_out_of_a_stream_cancels_generation(client, tiny_server) -> None:
    for event in client.stream("Write a poem", k=32, max_new_tokens=200, seed=0):
        assert isinstance(event, Instruction)
        break
    engine = tiny_server.servicer.engine  # the server dropped the rows and the request
    assert engine.wait_idle(10)
    assert engine.rows_in_flight == 0


def test_tls_with_private_root_certificates(tiny_model, tmp_path) -> None:
    from tests.central.test_server import _self_signed

    cert, key = _self_signed(tmp_path)
    running = start_server(ServerConfig(port=0, tls_cert=cert, tls_key=key), loaded=tiny_model)
    try:
        with CentralClient(f"localhost:{running.port}", root_certificates=cert) as client:
            assert client.generate("hi", k=1, max_new_tokens=2).features.shape == (1, 64)
    finally:
        running.stop(grace=0)
