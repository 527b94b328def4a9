"""Representation v2 over a real gRPC server (tiny model): the mean over the response's
tokens, the mean entropy and the embedding layer's mean, asked for per request; a v1
client that sees exactly the v1 stream, and a client from before the embedding mean that
sees exactly what it saw."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from central.forward import empty_response_tokens
from central.prompting import render_prompt, response_ids
from language_ranker.v1 import ranker_pb2 as pb

from .wire import decode

V1_PROTO = Path(__file__).parent / "data" / "ranker_v1_before_representation_v2.proto"
V2_PROTO = Path(__file__).parent / "data" / "ranker_v1_before_embedding_mean.proto"
PROMPT = pb.Prompt(text="Write a short poem.")
BOTH = [pb.FEATURE_VECTOR_LAST, pb.FEATURE_VECTOR_MEAN]
ALL = [*BOTH, pb.FEATURE_VECTOR_EMBEDDING_MEAN]


def _generate(stub, **fields) -> list[pb.GenerateResponse]:
    fields.setdefault("prompt", PROMPT)
    fields.setdefault("k", 6)
    fields.setdefault("sampling", pb.SamplingParams(max_new_tokens=10, seed=7))
    return list(stub.Generate(pb.GenerateRequest(**fields), timeout=60))


def _candidates(events: list[pb.GenerateResponse]) -> list[pb.Candidate]:
    return [e.candidate for e in events if e.WhichOneof("event") == "candidate"]


def _plain(model, ids: list[int]):
    with torch.inference_mode():
        return model.model(torch.tensor([ids]), output_hidden_states=True)


def test_info_advertises_the_vectors_and_the_entropy(central_stub) -> None:
    info = central_stub.Info(pb.InfoRequest(), timeout=5)
    assert list(info.feature_vectors) == ALL
    assert info.mean_entropy


def test_greedy_first_over_the_wire_puts_the_greedy_answer_at_index_zero(central_stub) -> None:
    assert central_stub.Info(pb.InfoRequest(), timeout=5).greedy_first
    greedy = _candidates(_generate(central_stub, k=1, sampling=pb.SamplingParams(
        temperature=0.0, max_new_tokens=10)))[0]  # fmt: skip
    mixed = _candidates(_generate(central_stub, sampling=pb.SamplingParams(
        max_new_tokens=10, seed=7, greedy_first=True)))  # fmt: skip
    first = next(c for c in mixed if c.index == 0)
    assert list(first.token_ids) == list(greedy.token_ids) and first.text == greedy.text
    assert first.cumulative_logprob == pytest.approx(greedy.cumulative_logprob, abs=1e-4)
    assert len({tuple(c.token_ids) for c in mixed}) > 1  # the rest are sampled


def test_a_request_that_asks_for_nothing_new_gets_the_v1_candidates(central_stub) -> None:
    events = _generate(central_stub)
    for c in _candidates(events):
        assert c.HasField("feature")
        assert not c.HasField("mean_feature") and not c.HasField("mean_entropy")
        assert not c.HasField("embedding_mean_feature")
    explicit = _generate(central_stub, features=pb.FeatureSpec(vectors=[pb.FEATURE_VECTOR_LAST]))
    assert [e.SerializeToString() for e in events[:-1]] == [
        e.SerializeToString() for e in explicit[:-1]
    ]


@torch.inference_mode()
def test_last_mean_and_entropy_equal_a_plain_forward_pass(central_stub, tiny_model) -> None:
    spec = pb.FeatureSpec(vectors=BOTH, mean_entropy=True, layer_index=3, encoding=pb.ENCODING_FP32)
    candidates = _candidates(_generate(central_stub, features=spec))
    ids = render_prompt(tiny_model, PROMPT)
    assert len(candidates) == 6
    for c in candidates:
        fed = list(c.token_ids) or empty_response_tokens(tiny_model)
        out = _plain(tiny_model, ids + fed)
        states = out.hidden_states[3][0, len(ids) :].numpy()
        np.testing.assert_allclose(decode(c.feature), states[-1], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(decode(c.mean_feature), states.mean(0), rtol=1e-4, atol=1e-5)
        logp = torch.log_softmax(out.logits[0, len(ids) - 1 : len(ids) - 1 + len(fed)], -1)
        entropy = float((-(logp.exp() * logp).sum(-1)).mean())
        assert c.HasField("mean_entropy") and c.mean_entropy == pytest.approx(entropy, abs=1e-4)


def test_mean_alone_leaves_the_last_token_vector_out(central_stub) -> None:
    spec = pb.FeatureSpec(vectors=[pb.FEATURE_VECTOR_MEAN])
    for c in _candidates(_generate(central_stub, features=spec, k=3)):
        assert not c.HasField("feature") and not c.HasField("mean_entropy")
        assert c.mean_feature.dtype == pb.DTYPE_FLOAT16 and list(c.mean_feature.shape) == [64]


@torch.inference_mode()
def test_features_rpc_returns_the_same_vectors_and_an_empty_response_is_not_the_prompt(
    central_stub, tiny_model
) -> None:
    responses = ["red, green, blue", "", "blue"]
    spec = pb.FeatureSpec(vectors=BOTH, mean_entropy=True, encoding=pb.ENCODING_FP32)
    reply = central_stub.Features(
        pb.FeaturesRequest(prompt=PROMPT, responses=responses, features=spec), timeout=10
    )
    assert len(reply.features) == len(reply.mean_features) == len(reply.mean_entropies) == 3
    ids = render_prompt(tiny_model, PROMPT)
    for text, last, mean, entropy in zip(
        responses, reply.features, reply.mean_features, reply.mean_entropies, strict=True
    ):
        fed = response_ids(tiny_model, text) or empty_response_tokens(tiny_model)
        out = _plain(tiny_model, ids + fed)
        states = out.hidden_states[2][0, len(ids) :].numpy()
        np.testing.assert_allclose(decode(last), states[-1], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(decode(mean), states.mean(0), rtol=1e-4, atol=1e-4)
        logp = torch.log_softmax(out.logits[0, len(ids) - 1 : -1], -1)
        assert entropy == pytest.approx(float((-(logp.exp() * logp).sum(-1)).mean()), abs=1e-4)
    instruction = decode(reply.instruction.feature)
    assert not np.allclose(decode(reply.features[1]), instruction, atol=1e-3)
    default = central_stub.Features(pb.FeaturesRequest(prompt=PROMPT, responses=responses))
    assert len(default.features) == 3 and not default.mean_features and not default.mean_entropies


@torch.inference_mode()
def test_the_embedding_mean_is_hidden_state_0_averaged_over_the_response(
    central_stub, tiny_model
) -> None:
    spec = pb.FeatureSpec(vectors=ALL, layer_index=3, encoding=pb.ENCODING_FP32)
    candidates = _candidates(_generate(central_stub, features=spec))
    ids = render_prompt(tiny_model, PROMPT)
    for c in candidates:
        fed = list(c.token_ids) or empty_response_tokens(tiny_model)
        out = _plain(tiny_model, ids + fed)
        embedded = out.hidden_states[0][0, len(ids) :].numpy().mean(0)
        assert list(c.embedding_mean_feature.shape) == [tiny_model.hidden_size]
        np.testing.assert_allclose(decode(c.embedding_mean_feature), embedded, atol=1e-6)
        states = out.hidden_states[3][0, len(ids) :].numpy()
        np.testing.assert_allclose(decode(c.mean_feature), states.mean(0), rtol=1e-4, atol=1e-5)
    responses = ["red, green, blue", "", "blue"]
    reply = central_stub.Features(
        pb.FeaturesRequest(prompt=PROMPT, responses=responses, features=spec), timeout=10
    )
    assert len(reply.embedding_mean_features) == 3
    for text, tensor in zip(responses, reply.embedding_mean_features, strict=True):
        fed = response_ids(tiny_model, text) or empty_response_tokens(tiny_model)
        embedded = _plain(tiny_model, ids + fed).hidden_states[0][0, len(ids) :].mean(0)
        np.testing.assert_allclose(decode(tensor), embedded.numpy(), atol=1e-6)


@pytest.mark.parametrize(
    ("encoding", "dtype", "tolerance"),
    [(pb.ENCODING_FP16, pb.DTYPE_FLOAT16, 1e-3), (pb.ENCODING_INT8, pb.DTYPE_INT8, 1 / 127)],
)
def test_the_embedding_mean_alone_in_each_encoding(
    central_stub, encoding: int, dtype: int, tolerance: float
) -> None:
    """Asked alone it comes alone, in the request's encoding (within that encoding's step
    of the exact values); the Features RPC likewise."""
    exact = _candidates(_generate(central_stub, k=3, features=pb.FeatureSpec(
        vectors=[pb.FEATURE_VECTOR_EMBEDDING_MEAN], encoding=pb.ENCODING_FP32)))  # fmt: skip
    spec = pb.FeatureSpec(vectors=[pb.FEATURE_VECTOR_EMBEDDING_MEAN], encoding=encoding)
    encoded = _candidates(_generate(central_stub, k=3, features=spec))
    for want, got in zip(exact, encoded, strict=True):
        assert not got.HasField("feature") and not got.HasField("mean_feature")
        assert got.embedding_mean_feature.dtype == dtype
        values, reference = decode(got.embedding_mean_feature), decode(want.embedding_mean_feature)
        np.testing.assert_allclose(values, reference, atol=tolerance * np.abs(reference).max())
    reply = central_stub.Features(
        pb.FeaturesRequest(prompt=PROMPT, responses=["red", ""], features=spec), timeout=10
    )
    assert not reply.features and not reply.mean_features
    assert [t.dtype for t in reply.embedding_mean_features] == [dtype, dtype]
    default = central_stub.Features(pb.FeaturesRequest(prompt=PROMPT, responses=["red"]))
    assert not default.embedding_mean_features


def test_an_unknown_vector_is_an_invalid_argument(central_stub) -> None:
    for bad in ([pb.FEATURE_VECTOR_UNSPECIFIED], [pb.FEATURE_VECTOR_MEAN, 9]):
        with pytest.raises(grpc.RpcError) as raised:
            _generate(central_stub, features=pb.FeatureSpec(vectors=bad))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert raised.value.details().startswith("features.vectors:")
    request = pb.FeaturesRequest(prompt=PROMPT, features=pb.FeatureSpec(vectors=[7]))
    with pytest.raises(grpc.RpcError) as raised:
        central_stub.Features(request, timeout=5)
    assert raised.value.details().startswith("features.vectors:")


_V1_CLIENT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import grpc
from google.protobuf.unknown_fields import UnknownFieldSet
from language_ranker.v1 import ranker_pb2 as old
from language_ranker.v1 import ranker_pb2_grpc as old_grpc
assert old.__file__.startswith(sys.argv[1]), old.__file__
with grpc.insecure_channel(sys.argv[2]) as channel:
    stub = old_grpc.CentralServiceStub(channel)
    request = old.GenerateRequest(
        prompt=old.Prompt(text="Write a short poem."), k=6,
        sampling=old.SamplingParams(max_new_tokens=10, seed=7),
    )
    events = list(stub.Generate(request, timeout=60))
    features = stub.Features(
        old.FeaturesRequest(prompt=request.prompt, responses=["red", ""]), timeout=10
    )
    info = stub.Info(old.InfoRequest(), timeout=5)
unknown = [len(UnknownFieldSet(e)) + len(UnknownFieldSet(getattr(e, e.WhichOneof("event"))))
           for e in events]
print(json.dumps({
    "events": [e.SerializeToString().hex() for e in events],
    "kinds": [e.WhichOneof("event") for e in events],
    "unknown": unknown,
    "features_unknown": len(UnknownFieldSet(features)),
    "features": features.SerializeToString().hex(),
    "info_unknown": sorted(f.field_number for f in UnknownFieldSet(info)),
}))
"""


def _run_old_client(tmp_path: Path, proto: Path, client: str, port: int) -> dict:
    """Compiles `proto` (an older contract) into its own package and runs `client`, a
    script using it, against the live server; returns what the script printed."""
    from grpc_tools import protoc

    package = tmp_path / "old"
    proto_dir = tmp_path / "proto" / "language_ranker" / "v1"
    proto_dir.mkdir(parents=True)
    (proto_dir / "ranker.proto").write_text(proto.read_text())
    package.mkdir()
    include = Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{tmp_path / 'proto'}", f"-I{include}"]
    outputs = [f"--python_out={package}", f"--grpc_python_out={package}"]
    assert protoc.main([*args, *outputs, "language_ranker/v1/ranker.proto"]) == 0
    for directory in (package / "language_ranker", package / "language_ranker" / "v1"):
        (directory / "__init__.py").touch()
    script = tmp_path / "old_client.py"
    script.write_text(client)
    done = subprocess.run(
        [sys.executable, str(script), str(package), f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout)


def test_a_client_built_from_the_v1_contract_gets_exactly_the_v1_stream(
    tmp_path: Path, tiny_server, central_stub
) -> None:
    """Compiles the contract as it was before representation v2 and calls the live server."""
    seen = _run_old_client(tmp_path, V1_PROTO, _V1_CLIENT, tiny_server.port)
    assert seen["kinds"] == ["instruction"] + ["candidate"] * 6 + ["usage"]
    assert seen["unknown"] == [0] * 8  # not one field the v1 contract does not know
    assert seen["features_unknown"] == 0
    # Info's new fields (vectors, entropy, weights checksum, greedy_first, weights format):
    # skipped, harmless
    assert seen["info_unknown"] == [12, 13, 14, 15, 16]
    # Byte for byte what a current client asking for nothing new receives (but the timing).
    now = _generate(central_stub)
    assert seen["events"][:-1] == [e.SerializeToString().hex() for e in now[:-1]]
    features = central_stub.Features(pb.FeaturesRequest(prompt=PROMPT, responses=["red", ""]))
    assert seen["features"] == features.SerializeToString().hex()


_V2_CLIENT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import grpc
from google.protobuf.unknown_fields import UnknownFieldSet
from language_ranker.v1 import ranker_pb2 as old
from language_ranker.v1 import ranker_pb2_grpc as old_grpc
assert old.__file__.startswith(sys.argv[1]), old.__file__
assert "FEATURE_VECTOR_EMBEDDING_MEAN" not in old.FeatureVector.keys()
spec = old.FeatureSpec(vectors=[old.FEATURE_VECTOR_LAST, old.FEATURE_VECTOR_MEAN],
                       mean_entropy=True)
with grpc.insecure_channel(sys.argv[2]) as channel:
    stub = old_grpc.CentralServiceStub(channel)
    request = old.GenerateRequest(
        prompt=old.Prompt(text="Write a short poem."), k=6,
        sampling=old.SamplingParams(max_new_tokens=10, seed=7), features=spec,
    )
    events = list(stub.Generate(request, timeout=60))
    features = stub.Features(
        old.FeaturesRequest(prompt=request.prompt, responses=["red", ""], features=spec),
        timeout=10,
    )
    info = stub.Info(old.InfoRequest(), timeout=5)
unknown = [len(UnknownFieldSet(e)) + len(UnknownFieldSet(getattr(e, e.WhichOneof("event"))))
           for e in events]
print(json.dumps({
    "events": [e.SerializeToString().hex() for e in events],
    "unknown": unknown,
    "features_unknown": len(UnknownFieldSet(features)),
    "features": features.SerializeToString().hex(),
    "feature_vectors": list(info.feature_vectors),
}))
"""


def test_a_client_from_before_the_embedding_mean_gets_exactly_what_it_got(
    tmp_path: Path, tiny_server, central_stub
) -> None:
    """The contract as it was before FEATURE_VECTOR_EMBEDDING_MEAN, asking for everything
    it knew (last, mean, entropy): not one field it does not know comes back, and the
    bytes are what a current client asking the same receives; Info's new vector reaches
    it as an unknown enum value, which it keeps as a number."""
    seen = _run_old_client(tmp_path, V2_PROTO, _V2_CLIENT, tiny_server.port)
    assert seen["unknown"] == [0] * 8
    assert seen["features_unknown"] == 0
    assert seen["feature_vectors"] == [1, 2, 3]
    spec = pb.FeatureSpec(vectors=BOTH, mean_entropy=True)
    now = _generate(central_stub, features=spec)
    assert seen["events"][:-1] == [e.SerializeToString().hex() for e in now[:-1]]
    features = central_stub.Features(
        pb.FeaturesRequest(prompt=PROMPT, responses=["red", ""], features=spec), timeout=10
    )
    assert seen["features"] == features.SerializeToString().hex()
