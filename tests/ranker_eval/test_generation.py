"""Re-extracted features equal the sampler's in-pass features (same layer, same tokens)."""

from __future__ import annotations

import numpy as np
import pytest

from central.sampler import SampledCandidate, SamplingConfig, sample
from ranker_eval.generation import cut_at_stop, extract_features, prompt_ids
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
