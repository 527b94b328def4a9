"""Per-token features (SWIFT) over a real gRPC server (tiny model), and the
contract's backward compatibility in both directions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from central.prompting import render_prompt
from central.server import ServerConfig, start_server
from central.service import ServiceLimits
from central.token_features import TokenRequest, token_chunks
from language_ranker.v1 import ranker_pb2 as pb

from .wire import decode

OLD_PROTO = Path(__file__).parent / "data" / "ranker_v1_before_token_features.proto"
PROMPT = pb.Prompt(text="Write a short poem.")


def _generate(stub, **fields) -> list[pb.GenerateResponse]:
    fields.setdefault("prompt", PROMPT)
    fields.setdefault("k", 4)
    fields.setdefault("sampling", pb.SamplingParams(max_new_tokens=12, seed=3))
    return list(stub.Generate(pb.GenerateRequest(**fields), timeout=60))


def _assemble(events: list[pb.GenerateResponse]) -> dict[int, np.ndarray]:
    """index -> (T, D), checking chunk order, offsets and the last-chunk flag."""
    out: dict[int, list[np.ndarray]] = {}
    done: set[int] = set()
    for e in events:
        if e.WhichOneof("event") != "token_features":
            continue
        chunk = e.token_features
        assert chunk.index not in done
        parts = out.setdefault(chunk.index, [])
        assert chunk.token_offset == sum(len(p) for p in parts)
        parts.append(decode(chunk.features))
        if chunk.last_chunk:
            done.add(chunk.index)
    assert done == set(out)
    return {i: np.concatenate(p) for i, p in out.items()}


def test_old_style_request_gets_exactly_the_old_stream(central_stub) -> None:
    events = _generate(central_stub, k=3)
    assert [e.WhichOneof("event") for e in events] == ["instruction"] + ["candidate"] * 3 + [
        "usage"
    ]
    assert not events[0].instruction.HasField("token_features")
    explicit_off = _generate(central_stub, k=3, token_features=pb.TokenFeatureSpec(enabled=False))
    strip = [e for e in explicit_off if e.WhichOneof("event") != "usage"]
    assert strip == [e for e in events if e.WhichOneof("event") != "usage"]


@torch.inference_mode()
def test_hidden_states_of_every_response_token_at_the_default_layers(
    central_stub, tiny_model
) -> None:
    events = _generate(central_stub, token_features=pb.TokenFeatureSpec(enabled=True))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[:5] == ["instruction"] + ["candidate"] * 4 and kinds[-1] == "usage"
    assert set(kinds[5:-1]) == {"token_features"}
    layout = events[0].instruction.token_features
    assert list(layout.layers) == [1, 2, 3, 4] and layout.feature_size == 4 * 64
    candidates = {e.candidate.index: e.candidate for e in events[1:5]}
    tokens = _assemble(events)
    assert sorted(tokens) == [0, 1, 2, 3]
    indices = [e.token_features.index for e in events[5:-1]]
    assert indices == sorted(indices)  # candidate by candidate, in index order
    prompt = render_prompt(tiny_model, PROMPT)
    for index, c in candidates.items():
        got = tokens[index]
        assert got.shape == (c.num_tokens, 256)
        if not c.num_tokens:
            continue
        ids = torch.tensor([prompt + list(c.token_ids)])
        hidden = tiny_model.model(input_ids=ids, output_hidden_states=True).hidden_states
        want = torch.cat([hidden[i][0, len(prompt) :] for i in (1, 2, 3, 4)], -1).numpy()
        np.testing.assert_allclose(got, want, atol=2e-2, rtol=1e-2)
        # the last token at the feature layer (2) is the candidate's own feature
        np.testing.assert_allclose(got[-1, 64:128], decode(c.feature), atol=2e-2, rtol=1e-2)


def test_logits_only_mode(central_stub) -> None:
    spec = pb.TokenFeatureSpec(enabled=True, top_logprobs=5, encoding=pb.ENCODING_FP32)
    events = _generate(central_stub, token_features=spec, k=3)
    assert events[0].instruction.token_features.feature_size == 7
    assert list(events[0].instruction.token_features.layers) == []
    tokens = _assemble(events)
    for e in events[1:4]:
        c = e.candidate
        values = tokens[c.index]
        assert values.shape == (c.num_tokens, 7)
        chosen, entropy, top = values[:, 0], values[:, 1], values[:, 2:]
        assert (entropy >= -1e-5).all() and (np.diff(top, axis=1) <= 1e-6).all()
        assert (chosen <= top[:, 0] + 1e-5).all()
        if c.finish_reason == pb.FINISH_REASON_LENGTH:  # no EOS term in the sum
            assert chosen.sum() == pytest.approx(c.cumulative_logprob, abs=1e-3)
        else:
            assert chosen.sum() > c.cumulative_logprob - 1e-3


def test_all_layers_explicit_layers_and_int8(central_stub) -> None:
    spec = pb.TokenFeatureSpec(enabled=True, all_layers=True, encoding=pb.ENCODING_INT8)
    events = _generate(central_stub, token_features=spec, k=2)
    assert list(events[0].instruction.token_features.layers) == [0, 1, 2, 3, 4]
    chunk = next(e.token_features for e in events if e.WhichOneof("event") == "token_features")
    assert chunk.features.dtype == pb.DTYPE_INT8
    assert all(v.shape[1] == 5 * 64 for v in _assemble(events).values())
    spec = pb.TokenFeatureSpec(enabled=True, layers=[-1, 0])
    events = _generate(central_stub, token_features=spec, k=2)
    assert list(events[0].instruction.token_features.layers) == [4, 0]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (pb.TokenFeatureSpec(enabled=True, layers=[9]), "token_features.layers"),
        (pb.TokenFeatureSpec(enabled=True, top_logprobs=1000), "token_features.top_logprobs"),
        (pb.TokenFeatureSpec(enabled=True, encoding=77), "features.encoding"),
    ],
)
def test_bad_token_specs_are_invalid_arguments(central_stub, spec, field: str) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        _generate(central_stub, token_features=spec)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith(field)


def test_chunks_stay_under_the_target_size(tiny_model) -> None:
    values = np.random.default_rng(0).standard_normal((50, 256)).astype(np.float32)
    chunks = list(token_chunks(7, values, pb.ENCODING_FP16, chunk_bytes=2048))
    assert [c.token_offset for c in chunks] == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48]
    assert all(c.ByteSize() < 2048 + 64 for c in chunks)
    assert [c.last_chunk for c in chunks] == [False] * 12 + [True]
    empty = list(token_chunks(1, np.zeros((0, 256), np.float32), pb.ENCODING_INT8))
    assert len(empty) == 1 and empty[0].last_chunk and list(empty[0].features.shape) == [0, 256]
    assert TokenRequest((1, 2), 0, pb.ENCODING_FP16).feature_size(64) == 128

    running = start_server(
        ServerConfig(port=0, limits=ServiceLimits(token_chunk_bytes=1024)), loaded=tiny_model
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            from language_ranker.v1 import ranker_pb2_grpc as pb_grpc

            stub = pb_grpc.CentralServiceStub(channel)
            events = _generate(stub, token_features=pb.TokenFeatureSpec(enabled=True))
    finally:
        running.stop(grace=0)
    chunks = [e for e in events if e.WhichOneof("event") == "token_features"]
    assert all(e.ByteSize() <= 1024 + 64 for e in chunks)
    assert len(chunks) > 4  # 256 fp16 values = 512 bytes a token: two tokens a chunk
    assert all(v.shape[1] == 256 for v in _assemble(events).values())


_OLD_CLIENT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from language_ranker.v1 import ranker_pb2 as old
data = json.load(open(sys.argv[2]))
out = {}
event = old.GenerateResponse.FromString(bytes.fromhex(data["instruction"]))
out["instruction"] = [event.WhichOneof("event"), event.instruction.layer_index,
                      event.instruction.prompt_tokens, len(event.instruction.feature.data)]
chunk = old.GenerateResponse.FromString(bytes.fromhex(data["chunk"]))
out["chunk"] = chunk.WhichOneof("event")
info = old.InfoResponse.FromString(bytes.fromhex(data["info"]))
out["info"] = [info.model_name, info.num_layers, info.max_new_tokens_limit]
out["roundtrip"] = event.SerializeToString().hex() == data["instruction"]
request = old.GenerateRequest(k=2, prompt=old.Prompt(text="hi"))
out["request"] = request.SerializeToString().hex()
print(json.dumps(out))
"""


def test_new_messages_parse_in_a_client_built_from_the_old_contract(tmp_path: Path) -> None:
    """Compiles the contract as it was before token features and reads new messages with it."""
    from grpc_tools import protoc

    package = tmp_path / "old"
    proto_dir = tmp_path / "proto" / "language_ranker" / "v1"
    proto_dir.mkdir(parents=True)
    (proto_dir / "ranker.proto").write_text(OLD_PROTO.read_text())
    package.mkdir()
    include = Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{tmp_path / 'proto'}", f"-I{include}", f"--python_out={package}"]
    assert protoc.main([*args, "language_ranker/v1/ranker.proto"]) == 0
    layout = pb.TokenFeatureLayout(layers=[27, 30], feature_size=1152)
    instruction = pb.GenerateResponse(
        instruction=pb.InstructionFeature(
            feature=pb.Tensor(dtype=pb.DTYPE_FLOAT16, shape=[4], data=bytes(8)),
            layer_index=18,
            prompt_tokens=9,
            token_features=layout,
        )
    )
    chunk = pb.GenerateResponse(token_features=pb.TokenFeatures(index=1, last_chunk=True))
    info = pb.InfoResponse(
        model_name="m", num_layers=30, max_new_tokens_limit=99, default_token_layers=[27]
    )
    messages = tmp_path / "messages.json"
    messages.write_text(
        json.dumps(
            {
                "instruction": instruction.SerializeToString().hex(),
                "chunk": chunk.SerializeToString().hex(),
                "info": info.SerializeToString().hex(),
            }
        )
    )
    script = tmp_path / "old_client.py"
    script.write_text(_OLD_CLIENT)
    done = subprocess.run(
        [sys.executable, str(script), str(package), str(messages)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seen = json.loads(done.stdout)
    assert seen["instruction"] == ["instruction", 18, 9, 8]
    assert seen["chunk"] == "token_features"  # the arm was reserved: old clients skip it
    assert seen["info"] == ["m", 30, 99]
    assert seen["roundtrip"]  # unknown new fields survive in an old client
    old_request = pb.GenerateRequest.FromString(bytes.fromhex(seen["request"]))
    assert not old_request.token_features.enabled  # an old request means no token features


def test_one_pass_for_several_kinds_equals_separate_passes(tiny_model) -> None:
    from central.token_features import compute_token_features, compute_token_features_many

    prompt = render_prompt(tiny_model, PROMPT)
    responses = [[5, 6, 7], [], [8], [9, 10, 11, 12, 13]]
    kinds = [TokenRequest((1, 4), 0, pb.ENCODING_FP16), TokenRequest((), 3, pb.ENCODING_FP16)]
    together = list(compute_token_features_many(tiny_model, prompt, responses, kinds, 3))
    for k, request in enumerate(kinds):
        alone = list(compute_token_features(tiny_model, prompt, responses, request, 2))
        assert [p for p, _ in alone] == [p for p, _ in together] == [0, 1, 2, 3]
        for (_, a), (_, both) in zip(alone, together, strict=True):
            assert a.shape == both[k].shape == (a.shape[0], request.feature_size(64))
            np.testing.assert_allclose(a, both[k], atol=1e-4)
