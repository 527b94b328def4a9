"""The shared half of both clients, on hand-built wire messages: stream decoding and assembly.

The parity and server tests cover what a real server sends; these cover what
it could send but rarely does: a stream cut inside the per-token features,
a candidate missing, fields a newer or older proto does not have.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge._errors import ServerError
from edge.runtime.client import CentralClient
from edge.runtime.client_base import ClientBase, _optional_float, _optional_tensor
from edge.runtime.types import Candidate, Usage
from language_ranker.v1 import ranker_pb2 as pb


def _tensor(*shape: int, value: float = 1.0) -> pb.Tensor:
    data = np.full(shape, value, np.float32)
    return pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=list(shape), data=data.tobytes())


def _stream(token_size: int = 0) -> list[pb.GenerateResponse]:
    """A two-candidate stream as central sends it, per-token features when token_size > 0."""
    layout = pb.TokenFeatureLayout(feature_size=token_size) if token_size else None
    instruction = pb.InstructionFeature(
        feature=_tensor(4), layer_index=2, prompt_tokens=5, token_features=layout
    )
    responses = [pb.GenerateResponse(instruction=instruction)]
    for index, tokens in ((1, [7]), (0, [3, 4, 5])):  # in the order they finished
        candidate = pb.Candidate(
            index=index, text=f"c{index}", token_ids=tokens, feature=_tensor(4, value=index)
        )
        responses.append(pb.GenerateResponse(candidate=candidate))
    if token_size:
        chunks = [(0, 0, 2, False), (0, 2, 1, True), (1, 0, 1, True)]
        for index, offset, rows, last in chunks:
            chunk = pb.TokenFeatures(
                index=index, token_offset=offset, features=_tensor(rows, token_size),
                last_chunk=last,
            )  # fmt: skip
            responses.append(pb.GenerateResponse(token_features=chunk))
    usage = pb.Usage(prompt_tokens=5, generated_tokens=4, seconds=0.5)
    return [*responses, pb.GenerateResponse(usage=usage)]


def _is_chunk_of(response: pb.GenerateResponse, index: int) -> bool:
    return (
        response.WhichOneof("event") == "token_features" and response.token_features.index == index
    )


def _decode(responses: list[pb.GenerateResponse], token_features: bool) -> list[object]:
    request = pb.GenerateRequest(token_features=pb.TokenFeatureSpec(enabled=token_features))
    decoder = ClientBase._stream_decoder(request)
    events = [decoder.decode(r) for r in responses]
    decoder.finish()
    return [e for e in events if e is not None]


def test_a_stream_assembles_into_a_generation_with_token_features_and_usage() -> None:
    builder = ClientBase._generation_builder("hi", 2)
    for event in _decode(_stream(token_size=3), token_features=True):
        builder.add(event)
    generation = builder.build()
    assert [c.index for c in generation.candidates] == [0, 1]
    assert [c.token_features.shape for c in generation.candidates] == [(3, 3), (1, 3)]
    assert generation.usage == Usage(prompt_tokens=5, generated_tokens=4, seconds=0.5)
    assert generation.layer_index == 2 and generation.features.dtype == np.float32
    np.testing.assert_array_equal(generation.features[:, 0], [0.0, 1.0])


def test_token_chunks_nobody_asked_for_are_dropped() -> None:
    events = _decode(_stream(token_size=3), token_features=False)
    assert [type(e).__name__ for e in events] == ["Instruction", "Candidate", "Candidate", "Usage"]


def test_a_stream_cut_inside_token_features_is_a_server_error() -> None:
    responses = [r for r in _stream(token_size=3) if not _is_chunk_of(r, 1)][
        :-2
    ]  # cut after 0's first chunk
    with pytest.raises(ServerError, match=r"inside the token features of \[0\]"):
        _decode(responses, token_features=True)


def test_missing_candidates_or_their_token_features_are_server_errors() -> None:
    events = _decode(_stream(), token_features=False)
    short = ClientBase._generation_builder("hi", 3)
    for event in events:
        short.add(event)
    with pytest.raises(ServerError, match="got 2 of 3 candidates"):
        short.build()
    no_tokens_for_1 = [r for r in _stream(token_size=3) if not _is_chunk_of(r, 1)]
    builder = ClientBase._generation_builder("hi", 2)
    for event in _decode(no_tokens_for_1, token_features=True):
        builder.add(event)
    with pytest.raises(ServerError, match=r"token features of candidates \[1\]"):
        builder.build()


def test_optional_fields_are_none_when_unset_or_unknown_to_this_proto() -> None:
    """How representation-v2 fields decode: None from servers (or protos) without them."""
    assert _optional_float(pb.SamplingParams(), "temperature") is None
    assert _optional_float(pb.SamplingParams(temperature=0.5), "temperature") == 0.5
    assert _optional_float(pb.SamplingParams(), "no_such_field") is None
    assert _optional_tensor(pb.InstructionFeature(), "feature") is None
    feature = _optional_tensor(pb.InstructionFeature(feature=_tensor(2)), "feature")
    assert feature is not None and feature.dtype == np.float32 and feature.shape == (2,)
    candidate = _decode(_stream(), token_features=False)[1]
    assert isinstance(candidate, Candidate)
    if "mean_feature" not in pb.Candidate.DESCRIPTOR.fields_by_name:
        assert candidate.mean_feature is None and candidate.mean_entropy is None


@pytest.mark.parametrize("k", [-1, 0, 2.5, True, "4"])
def test_a_bad_k_is_refused_before_sending_naming_it(k: object) -> None:
    client = CentralClient("127.0.0.1:1")
    with pytest.raises(ValueError, match=r"k must be a whole number of candidates"):
        client.build_generate_request("hi", k)  # type: ignore[arg-type]
    client.close()


def test_an_unknown_option_is_named_with_the_closest_one() -> None:
    client = CentralClient("127.0.0.1:1")
    expected = r"unknown option 'tempreature' \(did you mean 'temperature'\?\); its options"
    with pytest.raises(TypeError, match=rf"generate\(\) got an {expected} are .*top_p"):
        client.build_generate_request("hi", 4, tempreature=0.5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"features\(\) got an unknown option 'seed'"):
        client.build_features_request("hi", ["a"], seed=1)  # type: ignore[call-arg]
    client.close()


def test_the_embedding_mean_decodes_and_a_candidate_without_last_has_an_empty_feature() -> None:
    message = pb.Candidate(
        index=0, text="x", token_ids=[3], embedding_mean_feature=_tensor(4, value=0.5)
    )  # "last" left out by the request: `feature` unset
    candidate = _decode([pb.GenerateResponse(candidate=message)], token_features=False)[0]
    assert isinstance(candidate, Candidate)
    assert candidate.feature.shape == (0,) and candidate.feature.dtype == np.float32
    assert candidate.mean_feature is None
    assert candidate.embedding_mean_feature is not None
    np.testing.assert_array_equal(candidate.embedding_mean_feature, np.full(4, 0.5, np.float32))
    plain = _decode(_stream(), token_features=False)[1]
    assert isinstance(plain, Candidate) and plain.embedding_mean_feature is None


def _vectors_reply(**lists) -> pb.FeaturesResponse:
    instruction = pb.InstructionFeature(feature=_tensor(4), layer_index=3)
    return pb.FeaturesResponse(instruction=instruction, **lists)


def test_response_vectors_keep_what_was_asked_and_refuse_a_short_reply() -> None:
    every = [pb.FEATURE_VECTOR_LAST, pb.FEATURE_VECTOR_MEAN, pb.FEATURE_VECTOR_EMBEDDING_MEAN]
    request = pb.FeaturesRequest(
        responses=["a", "b"], features=pb.FeatureSpec(vectors=every, mean_entropy=True)
    )
    reply = _vectors_reply(
        features=[_tensor(4, value=1), _tensor(4, value=2)],
        mean_features=[_tensor(4), _tensor(4)],
        embedding_mean_features=[_tensor(4, value=3), _tensor(4, value=4)],
        mean_entropies=[0.5, 0.25],
    )
    got = ClientBase._decode_vectors(request, reply, None)
    assert got.layer_index == 3 and got.identity is not None
    assert got.identity.parts == ("last", "mean", "embedding_mean")
    assert got.embedding_mean is not None and got.embedding_mean[:, 0].tolist() == [3.0, 4.0]
    assert got.mean_entropy is not None and got.mean_entropy.tolist() == [0.5, 0.25]
    # A server that predates the embedding mean sends none: None, and the identity says so.
    older = _vectors_reply(features=list(reply.features), mean_features=list(reply.mean_features))
    got = ClientBase._decode_vectors(request, older, None)
    assert got.embedding_mean is None and got.mean_entropy is None
    assert got.identity is not None and got.identity.parts == ("last", "mean")
    short = _vectors_reply(features=[_tensor(4)])
    with pytest.raises(ServerError, match="sent 1 vectors for 2 responses"):
        ClientBase._decode_vectors(request, short, None)
