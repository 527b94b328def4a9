"""Re-extracted features equal the sampler's in-pass features (same layer, same tokens)."""

from __future__ import annotations

import numpy as np

from central.sampler import SampledCandidate, SamplingConfig, sample
from harness.generation import extract_features, prompt_ids
from harness.tasks import get_task


def test_reextraction_reproduces_in_pass_features(tiny_model) -> None:
    task = get_task("sentiment")
    ids = prompt_ids(tiny_model, task, task.problems(1, seed=0)[0])
    layer = 3
    items = list(sample(tiny_model, ids, SamplingConfig(k=6, max_new_tokens=10, seed=1), layer))
    cands = sorted((c for c in items[1:] if isinstance(c, SampledCandidate)), key=lambda c: c.index)
    instruction, features = extract_features(
        tiny_model, ids, [c.token_ids for c in cands], [0, layer]
    )
    np.testing.assert_allclose(instruction[1], items[0], atol=2e-2, rtol=2e-2)
    for row, cand in enumerate(cands):
        np.testing.assert_allclose(features[row, 1], cand.feature, atol=2e-2, rtol=2e-2)
