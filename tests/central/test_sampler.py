"""The sampler's features equal a plain forward pass, whatever the finish."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from central.prompting import render_prompt
from central.sampler import Cancelled, SampledCandidate, SamplingConfig, sample
from language_ranker.v1 import ranker_pb2 as pb

LAYER = 2


def _run(model, prompt: str, **config) -> tuple[list[int], np.ndarray, list[SampledCandidate]]:
    ids = render_prompt(model, pb.Prompt(text=prompt))
    events = list(sample(model, ids, SamplingConfig(**config), LAYER))
    return ids, events[0], events[1:]


def _forward(model, ids: list[int]):
    with torch.inference_mode():
        return model.model(torch.tensor([ids]), output_hidden_states=True)


def test_features_equal_a_direct_forward_pass_for_eos_and_length_finishes(tiny_model) -> None:
    ids, instruction, candidates = _run(
        tiny_model, "What is two plus three?", k=12, max_new_tokens=10, seed=3
    )
    assert sorted(c.index for c in candidates) == list(range(12))
    finishes = {c.finished_by_eos for c in candidates}
    assert finishes == {True, False}, "the tiny model should end some responses early"

    direct = _forward(tiny_model, ids)
    np.testing.assert_allclose(instruction, direct.hidden_states[LAYER][0, -1], atol=1e-5)
    for candidate in candidates:
        out = _forward(tiny_model, ids + candidate.token_ids)
        expected = out.hidden_states[LAYER][0, -1].numpy()
        np.testing.assert_allclose(candidate.feature, expected, rtol=1e-4, atol=1e-5)
        if not candidate.finished_by_eos:
            assert len(candidate.token_ids) == 10


def test_cumulative_logprob_matches_the_model(tiny_model) -> None:
    ids, _, candidates = _run(tiny_model, "Write a poem.", k=6, max_new_tokens=8, seed=5)
    eos = next(iter(tiny_model.eos_token_ids))
    for candidate in candidates:
        scored = candidate.token_ids + ([eos] if candidate.finished_by_eos else [])
        logits = _forward(tiny_model, ids + scored).logits[0, len(ids) - 1 : -1]
        expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(scored)[:, None]).sum()
        assert candidate.cumulative_logprob == pytest.approx(float(expected), abs=1e-3)


def test_candidates_stream_in_the_order_they_finish(tiny_model) -> None:
    _, _, candidates = _run(tiny_model, "List colours.", k=12, max_new_tokens=10, seed=3)
    lengths = [len(c.token_ids) + (0 if c.finished_by_eos else 1) for c in candidates]
    assert lengths == sorted(lengths)


def test_same_seed_same_candidates_and_different_seed_differs(tiny_model) -> None:
    def texts(seed: int) -> list[tuple[int, ...]]:
        _, _, cands = _run(tiny_model, "Write a poem.", k=4, max_new_tokens=8, seed=seed)
        return [tuple(c.token_ids) for c in sorted(cands, key=lambda c: c.index)]

    assert texts(11) == texts(11)
    assert texts(11) != texts(12)


def test_greedy_matches_transformers_generate(tiny_model) -> None:
    ids, _, candidates = _run(
        tiny_model, "The quick brown fox", k=2, max_new_tokens=8, temperature=0.0
    )
    with torch.inference_mode():
        reference = tiny_model.model.generate(
            torch.tensor([ids]), max_new_tokens=8, do_sample=False
        )[0, len(ids) :].tolist()
    reference = [t for t in reference if t not in tiny_model.eos_token_ids]
    assert candidates[0].token_ids == reference[: len(candidates[0].token_ids)]
    assert candidates[0].token_ids == candidates[1].token_ids


def test_top_k_one_is_greedy(tiny_model) -> None:
    _, _, greedy = _run(tiny_model, "Add two numbers", k=1, max_new_tokens=6, temperature=0.0)
    _, _, top1 = _run(tiny_model, "Add two numbers", k=1, max_new_tokens=6, top_k=1, seed=9)
    assert greedy[0].token_ids == top1[0].token_ids


def test_should_stop_cancels_between_steps(tiny_model) -> None:
    ids = render_prompt(tiny_model, pb.Prompt(text="Write a poem."))
    calls = []

    def stop_after_one_step() -> bool:
        calls.append(1)
        return len(calls) > 1

    config = SamplingConfig(k=8, max_new_tokens=200, seed=1)
    with pytest.raises(Cancelled):
        list(sample(tiny_model, ids, config, LAYER, should_stop=stop_after_one_step))
    assert len(calls) == 2
