"""The forward primitive: responses fed on a prefilled prompt equal a plain forward pass,
and the vectors pooled from them (last, mean, mean entropy) are what their names say."""

from __future__ import annotations

import numpy as np
import torch

from central.forward import PrefilledPrompt, empty_response_tokens
from central.pooling import pool_responses
from central.prompting import render_prompt
from language_ranker.v1 import ranker_pb2 as pb

RESPONSES = [[5, 6, 7], [], [8], [9, 10, 11, 12, 13]]


def _plain(model, ids: list[int]):
    with torch.inference_mode():
        return model.model(torch.tensor([ids]), output_hidden_states=True)


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def test_fed_responses_equal_a_plain_pass_at_every_layer_and_position(tiny_model) -> None:
    prompt = render_prompt(tiny_model, pb.Prompt(text="Write a short poem."))
    layers = [0, 2, 4]
    prefilled = PrefilledPrompt(tiny_model, prompt, layers, logits=True)
    alone = _plain(tiny_model, prompt)
    for layer in layers:
        np.testing.assert_allclose(
            prefilled.hidden[layer], alone.hidden_states[layer][0, -1], rtol=1e-4, atol=1e-5
        )
    passes = list(prefilled.feed(RESPONSES, batch_size=3))  # a padded batch, then one alone
    assert [p.num_tokens for p in passes] == [3, 0, 1, 5]
    for response, passed in zip(RESPONSES, passes, strict=True):
        fed = response or empty_response_tokens(tiny_model)  # an empty response: EOS, once
        out = _plain(tiny_model, prompt + fed)
        for layer in layers:
            assert passed.hidden[layer].shape == (len(fed), 64)
            want = out.hidden_states[layer][0, len(prompt) :]
            np.testing.assert_allclose(passed.hidden[layer], want, rtol=1e-4, atol=1e-4)
        # the logits each fed token was drawn from: from the prompt's last position on
        assert passed.logits is not None and passed.logits.shape[0] == len(fed)
        want = out.logits[0, len(prompt) - 1 : len(prompt) - 1 + len(fed)]
        np.testing.assert_allclose(passed.logits, want, rtol=1e-4, atol=1e-4)


def test_a_pass_without_logits_stops_at_the_deepest_layer_and_stays_exact(tiny_model) -> None:
    """Layers above the deepest one asked for never run: their KV cache stays empty."""
    prompt = render_prompt(tiny_model, pb.Prompt(text="List colours."))
    prefilled = PrefilledPrompt(tiny_model, prompt, [1])
    assert prefilled.last_logits is None
    passes = list(prefilled.feed(RESPONSES, batch_size=4))
    assert all(p.logits is None for p in passes)
    for response, passed in zip(RESPONSES, passes, strict=True):
        fed = response or empty_response_tokens(tiny_model)
        want = _plain(tiny_model, prompt + fed).hidden_states[1][0, len(prompt) :]
        np.testing.assert_allclose(passed.hidden[1], want, rtol=1e-4, atol=1e-4)


def test_pooled_last_mean_and_entropy_at_several_layers(tiny_model) -> None:
    prompt = render_prompt(tiny_model, pb.Prompt(text="What is two plus three?"))
    instruction, pooled = pool_responses(
        tiny_model, prompt, RESPONSES, [3, 1], mean_entropy=True, batch_size=2
    )
    alone = _plain(tiny_model, prompt)
    np.testing.assert_allclose(instruction[0], alone.hidden_states[3][0, -1], atol=1e-4)
    np.testing.assert_allclose(instruction[1], alone.hidden_states[1][0, -1], atol=1e-4)
    for response, p in zip(RESPONSES, pooled, strict=True):
        assert p.last.shape == p.mean.shape == (2, 64)
        fed = response or empty_response_tokens(tiny_model)
        out = _plain(tiny_model, prompt + fed)
        for i, layer in enumerate([3, 1]):
            states = out.hidden_states[layer][0, len(prompt) :]
            np.testing.assert_allclose(p.last[i], states[-1], atol=1e-4)
            np.testing.assert_allclose(p.mean[i], states.mean(0), atol=1e-4)
        drawn_from = out.logits[0, len(prompt) - 1 : -1]
        assert p.mean_entropy is not None
        assert abs(p.mean_entropy - float(_entropy(drawn_from).mean())) < 1e-4


def test_an_empty_response_is_not_the_prompt(tiny_model) -> None:
    """Its vectors are the EOS token's state after the prompt, never the instruction feature."""
    prompt = render_prompt(tiny_model, pb.Prompt(text="Please list three colours"))
    instruction, (empty,) = pool_responses(tiny_model, prompt, [[]], [2])
    assert not np.allclose(empty.last[0], instruction[0], atol=1e-3)
    np.testing.assert_array_equal(empty.last, empty.mean)  # one fed token: its mean is itself
    eos = _plain(tiny_model, prompt + empty_response_tokens(tiny_model)).hidden_states[2][0, -1]
    np.testing.assert_allclose(empty.last[0], eos, atol=1e-4)
    assert empty_response_tokens(tiny_model) == [tiny_model.tokenizer.eos_token_id]
