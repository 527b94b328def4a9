"""The contract over a real gRPC server on a loopback port (tiny model)."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest
import torch

from central.prompting import render_prompt, response_ids
from language_ranker.v1 import ranker_pb2 as pb

from .wire import decode


def _generate(stub, **fields) -> list[pb.GenerateResponse]:
    fields.setdefault("prompt", pb.Prompt(text="What is two plus three?"))
    fields.setdefault("k", 4)
    fields.setdefault("sampling", pb.SamplingParams(max_new_tokens=8, seed=1))
    return list(stub.Generate(pb.GenerateRequest(**fields), timeout=30))


def test_info_describes_the_model(central_stub, tiny_model) -> None:
    info = central_stub.Info(pb.InfoRequest(), timeout=5)
    assert info.num_layers == 4 and info.hidden_size == 64
    assert info.default_layer_index == round(0.6 * 4)
    assert set(info.encodings) == {pb.ENCODING_FP16, pb.ENCODING_FP32, pb.ENCODING_INT8}
    assert info.has_chat_template
    assert info.max_k == 64
    assert info.context_length == 256
    assert info.weights_format == tiny_model.weights_format in ("int8", "float32")


def test_generate_streams_instruction_then_candidates_then_usage(central_stub) -> None:
    events = _generate(central_stub, k=5)
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds == ["instruction"] + ["candidate"] * 5 + ["usage"]
    instruction = events[0].instruction
    assert instruction.layer_index == 2
    assert instruction.feature.dtype == pb.DTYPE_FLOAT16
    assert list(instruction.feature.shape) == [64] and len(instruction.feature.data) == 128
    candidates = [e.candidate for e in events[1:-1]]
    assert sorted(c.index for c in candidates) == list(range(5))
    for c in candidates:
        assert c.num_tokens == len(c.token_ids) <= 8
        assert c.finish_reason in (pb.FINISH_REASON_EOS, pb.FINISH_REASON_LENGTH)
        assert c.cumulative_logprob < 0
        assert decode(c.feature).shape == (64,)
    usage = events[-1].usage
    assert usage.generated_tokens == sum(c.num_tokens for c in candidates)


def test_generated_features_equal_a_forward_pass_at_the_requested_layer(
    central_stub, tiny_model
) -> None:
    prompt = pb.Prompt(text="Write a short poem.")
    events = _generate(
        central_stub,
        prompt=prompt,
        k=3,
        features=pb.FeatureSpec(layer_index=3, encoding=pb.ENCODING_FP32),
    )
    ids = render_prompt(tiny_model, prompt)
    for event in events[1:-1]:
        c = event.candidate
        with torch.inference_mode():
            out = tiny_model.model(
                torch.tensor([ids + list(c.token_ids)]), output_hidden_states=True
            )
        np.testing.assert_allclose(
            decode(c.feature), out.hidden_states[3][0, -1].numpy(), rtol=1e-4, atol=1e-5
        )


def test_fp16_feature_is_within_half_precision_of_fp32(central_stub) -> None:
    half = _generate(central_stub, k=2)
    full = _generate(central_stub, k=2, features=pb.FeatureSpec(encoding=pb.ENCODING_FP32))
    for a, b in zip(half[1:-1], full[1:-1], strict=True):
        np.testing.assert_allclose(
            decode(a.candidate.feature), decode(b.candidate.feature), rtol=2e-3, atol=2e-3
        )


def test_features_rpc_matches_a_forward_pass(central_stub, tiny_model) -> None:
    prompt = pb.Prompt(text="Please list three colours")
    responses = ["red, green, blue", "blue", "The sea and the wind and the lazy dog"]
    reply = central_stub.Features(
        pb.FeaturesRequest(
            prompt=prompt, responses=responses, features=pb.FeatureSpec(encoding=pb.ENCODING_FP32)
        ),
        timeout=10,
    )
    ids = render_prompt(tiny_model, prompt)
    assert reply.instruction.prompt_tokens == len(ids)
    assert len(reply.features) == 3
    for text, tensor in zip(responses, reply.features, strict=True):
        full = ids + response_ids(tiny_model, text)
        with torch.inference_mode():
            out = tiny_model.model(torch.tensor([full]), output_hidden_states=True)
        np.testing.assert_allclose(
            decode(tensor), out.hidden_states[2][0, -1].numpy(), rtol=1e-4, atol=1e-4
        )


def test_chat_prompt_and_raw_prompt_are_rendered_differently(central_stub) -> None:
    chat = pb.Prompt(chat=pb.Chat(messages=[pb.ChatMessage(role="user", content="Hi there")]))
    raw = pb.Prompt(text="Hi there", raw=True)
    a = _generate(central_stub, prompt=chat, k=1)[0].instruction
    b = _generate(central_stub, prompt=raw, k=1)[0].instruction
    assert a.prompt_tokens > b.prompt_tokens


def test_same_seed_is_reproducible_over_the_wire(central_stub) -> None:
    def texts() -> list[str]:
        events = _generate(central_stub, k=4)
        return [c.text for c in sorted((e.candidate for e in events[1:-1]), key=lambda c: c.index)]

    assert texts() == texts()


@pytest.mark.slow  # several seconds; CI runs it
def test_concurrent_requests_are_all_served_correctly(central_stub) -> None:
    def run(seed: int) -> list[tuple[int, ...]]:
        events = _generate(
            central_stub, k=3, sampling=pb.SamplingParams(max_new_tokens=8, seed=seed)
        )
        return sorted(tuple(e.candidate.token_ids) for e in events[1:-1])

    expected = {seed: run(seed) for seed in range(6)}
    results: dict[int, list[tuple[int, ...]]] = {}
    threads = [
        threading.Thread(target=lambda s=s: results.__setitem__(s, run(s))) for s in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == expected


LONG_PROMPT = "word " * 400


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"prompt": pb.Prompt(text="")}, "prompt"),
        ({"prompt": pb.Prompt(text="   ")}, "prompt"),
        ({"prompt": pb.Prompt()}, "prompt"),
        ({"prompt": pb.Prompt(chat=pb.Chat())}, "prompt.chat.messages"),
        (
            {
                "prompt": pb.Prompt(
                    chat=pb.Chat(messages=[pb.ChatMessage(role="robot", content="x")])
                )
            },
            "prompt.chat.messages[0].role",
        ),
        ({"k": 0}, "k"),
        ({"k": 65}, "k"),
        ({"sampling": pb.SamplingParams(temperature=-0.5)}, "sampling.temperature"),
        ({"sampling": pb.SamplingParams(top_p=0.0)}, "sampling.top_p"),
        ({"sampling": pb.SamplingParams(max_new_tokens=0)}, "sampling.max_new_tokens"),
        ({"features": pb.FeatureSpec(encoding=42)}, "features.encoding"),
        ({"features": pb.FeatureSpec(layer_index=5)}, "features.layer_index"),
        ({"features": pb.FeatureSpec(layer_fraction=2.0)}, "features.layer_fraction"),
        ({"prompt": pb.Prompt(text=LONG_PROMPT)}, "prompt"),
        ({"sampling": pb.SamplingParams(max_new_tokens=250)}, "sampling.max_new_tokens"),
    ],
)
def test_bad_input_is_invalid_argument_naming_the_field_and_server_keeps_serving(
    central_stub, request_fields, field
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        _generate(central_stub, **request_fields)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith(f"{field}:"), raised.value.details()
    assert len(_generate(central_stub, k=2)) == 4  # the next good request succeeds


def test_features_rpc_rejects_bad_input(central_stub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        central_stub.Features(pb.FeaturesRequest(prompt=pb.Prompt(text="")), timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith("prompt:")
    too_long = pb.FeaturesRequest(prompt=pb.Prompt(text="hi"), responses=["ok", LONG_PROMPT])
    with pytest.raises(grpc.RpcError) as raised:
        central_stub.Features(too_long, timeout=5)
    assert raised.value.details().startswith("responses[1]:")
