"""Re-extracted features equal the sampler's in-pass features (same layer, same tokens)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from central.sampler import SampledCandidate, SamplingConfig, sample
from ranker_eval.cache import CacheKey, CandidateCache
from ranker_eval.generation import (
    GenerationConfig,
    cut_at_stop,
    extract_features,
    generate_problem,
    greedy_response,
    layer_indices,
    prompt_ids,
)
from ranker_eval.tasks import get_task


def test_reextraction_reproduces_in_pass_features(tiny_model) -> None:
    task = get_task("sentiment")
    ids = prompt_ids(tiny_model, task, task.problems(1, seed=0)[0])
    layer = 3
    items = list(sample(tiny_model, ids, SamplingConfig(k=6, max_new_tokens=10, seed=1), layer))
    cands = sorted((c for c in items[1:] if isinstance(c, SampledCandidate)), key=lambda c: c.index)
    instruction, features, means = extract_features(
        tiny_model, ids, [c.token_ids for c in cands], [0, layer]
    )
    np.testing.assert_allclose(instruction[1], items[0], atol=2e-2, rtol=2e-2)
    for row, cand in enumerate(cands):
        np.testing.assert_allclose(features[row, 1], cand.feature, atol=2e-2, rtol=2e-2)
        np.testing.assert_allclose(means[row, 1], cand.mean_feature, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize(
    ("text", "stop", "expected"),
    [
        ("    return 1\n\ndef other(x):\n    pass", ("\ndef ", "\n#"), "    return 1\n"),
        ("get_weather(city='Paris')\nget_time()", ("\n",), "get_weather(city='Paris')"),
        ("    return 2\nif __name__ == '__main__':", ("\ndef ", "\nif __name__"), "    return 2"),
        ("no stop here", ("\ndef ",), "no stop here"),
    ],
)
def test_cut_at_stop_leaves_no_part_of_the_stop(
    tiny_model, text: str, stop: tuple[str, ...], expected: str
) -> None:
    ids = tiny_model.tokenizer(text, add_special_tokens=False)["input_ids"]
    cut = tiny_model.tokenizer.decode(cut_at_stop(tiny_model, ids, stop))
    assert expected.startswith(cut) and len(expected) - len(cut) <= 1  # a shared "\n" may go
    assert not any(s.strip() and s.strip() in cut for s in stop)


def test_the_greedy_candidate_is_what_a_greedy_first_request_returns_and_is_cached(
    tiny_model, tmp_path
) -> None:
    task = get_task("sentiment")
    problem = task.problems(1, seed=0)[0]
    ids = prompt_ids(tiny_model, task, problem)
    (text, label), greedy = greedy_response(tiny_model, task, problem)
    config = SamplingConfig(k=3, max_new_tokens=task.max_new_tokens, seed=4, greedy_first=True)
    layers = layer_indices(tiny_model)
    first = next(
        c for c in sample(tiny_model, ids, config, layers[2], entropy=True)
        if isinstance(c, SampledCandidate) and c.index == 0
    )  # fmt: skip
    assert tiny_model.tokenizer.decode(first.token_ids) == text
    assert label == task.is_correct(problem, text) and greedy.answer == task.extract(problem, text)
    assert greedy.num_tokens == len(first.token_ids)
    assert greedy.cumulative == pytest.approx(first.cumulative_logprob, abs=1e-4)
    assert greedy.entropy == pytest.approx(first.mean_entropy, abs=1e-4)
    np.testing.assert_allclose(greedy.mean[2], first.mean_feature, atol=2e-2, rtol=2e-2)
    np.testing.assert_allclose(greedy.last[2], first.feature, atol=2e-2, rtol=2e-2)

    key = CacheKey("tiny", "sentiment", 3, 1.0, task.max_new_tokens, 0, tuple(layers))
    cache = CandidateCache(tmp_path, key)
    record = generate_problem(tiny_model, task, problem, GenerationConfig(k=3, beam_width=0))
    cache.save(record)
    loaded = cache.load(problem.uid)
    assert cache.has_greedy_candidate(problem.uid) and loaded.greedy == (text, label)
    assert loaded.greedy_candidate is not None
    np.testing.assert_array_equal(loaded.greedy_candidate.last, greedy.last)
    assert loaded.greedy_candidate.num_tokens == greedy.num_tokens


def test_int8_and_fp32_pools_are_cached_apart(tmp_path: Path) -> None:
    fp32 = CacheKey("SmolLM2", "math", 16, 1.0, 128, 0, (18,))
    int8 = dataclasses.replace(fp32, weights="int8")
    assert fp32.directory(tmp_path).parent.name == "SmolLM2"  # where pools always were
    assert int8.directory(tmp_path).parent.name == "SmolLM2-int8"
    CandidateCache(tmp_path, fp32)
    settings = fp32.directory(tmp_path) / "settings.json"
    stored = json.loads(settings.read_text())
    assert stored.pop("weights") == "float32"
    settings.write_text(json.dumps(stored))  # a pool made before formats were recorded
    CandidateCache(tmp_path, fp32)  # is read as float32
    int8_dir = int8.directory(tmp_path)
    int8_dir.mkdir(parents=True)
    (int8_dir / "settings.json").write_text(json.dumps(stored))  # fp32 settings, int8 place
    with pytest.raises(ValueError, match="other settings"):
        CandidateCache(tmp_path, int8)
