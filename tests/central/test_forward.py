"""The forward primitive: responses fed on a prefilled prompt equal a plain forward pass."""

from __future__ import annotations

import numpy as np
import torch

from central.forward import PrefilledPrompt
from central.pooling import pool_responses
from central.prompting import render_prompt
from language_ranker.v1 import ranker_pb2 as pb

RESPONSES = [[5, 6, 7], [], [8], [9, 10, 11, 12, 13]]


def _plain(model, ids: list[int]):
    with torch.inference_mode():
        return model.model(torch.tensor([ids]), output_hidden_states=True)


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
        out = _plain(tiny_model, prompt + response)
        n = len(response)
        for layer in layers:
            assert passed.hidden[layer].shape == (n, 64)
            want = out.hidden_states[layer][0, len(prompt) :]
            np.testing.assert_allclose(passed.hidden[layer], want, rtol=1e-4, atol=1e-4)
        # the logits each response token was drawn from: from the prompt's last position on
        assert passed.logits is not None and passed.logits.shape[0] == n
        want = out.logits[0, len(prompt) - 1 : len(prompt) - 1 + n]
        np.testing.assert_allclose(passed.logits, want, rtol=1e-4, atol=1e-4)


def test_a_pass_without_logits_stops_at_the_deepest_layer_and_stays_exact(tiny_model) -> None:
    """Layers above the deepest one asked for never run: their KV cache stays empty."""
    prompt = render_prompt(tiny_model, pb.Prompt(text="List colours."))
    prefilled = PrefilledPrompt(tiny_model, prompt, [1])
    assert prefilled.last_logits is None
    passes = list(prefilled.feed(RESPONSES, batch_size=4))
    assert all(p.logits is None for p in passes)
    for response, passed in zip(RESPONSES, passes, strict=True):
        want = _plain(tiny_model, prompt + response).hidden_states[1][0, len(prompt) :]
        np.testing.assert_allclose(passed.hidden[1], want, rtol=1e-4, atol=1e-4)


def test_pooled_last_token_at_several_layers(tiny_model) -> None:
    prompt = render_prompt(tiny_model, pb.Prompt(text="What is two plus three?"))
    instruction, pooled = pool_responses(tiny_model, prompt, RESPONSES, [3, 1], batch_size=2)
    alone = _plain(tiny_model, prompt)
    np.testing.assert_allclose(instruction[0], alone.hidden_states[3][0, -1], atol=1e-4)
    np.testing.assert_allclose(instruction[1], alone.hidden_states[1][0, -1], atol=1e-4)
    for response, p in zip(RESPONSES, pooled, strict=True):
        assert p.last.shape == (2, 64)
        if response:
            out = _plain(tiny_model, prompt + response)
            np.testing.assert_allclose(p.last[0], out.hidden_states[3][0, -1], atol=1e-4)
            np.testing.assert_allclose(p.last[1], out.hidden_states[1][0, -1], atol=1e-4)
