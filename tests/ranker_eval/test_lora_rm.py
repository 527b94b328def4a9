"""The LoRA-on-base reward model: adapters start as the identity, only they and the head learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from central.model import load_model
from ranker_eval.methods.data import Pool
from ranker_eval.methods.lora_rm import LoraRewardConfig, LoraRewardMethod, LoraRewardModel
from ranker_eval.tasks import get_task


def _pool(texts: list[str], labels: list[float], problems: int) -> Pool:
    task = get_task("math")
    items = task.problems(problems, 0)
    return Pool(
        problems=items,
        prompts=[p.question for p in items],
        instruction=np.zeros((problems, 1, 64), np.float32),
        candidates=np.zeros((problems, len(texts), 1, 64), np.float32),
        labels=np.tile(np.array(labels, np.float32), (problems, 1)),
        logprobs=np.zeros((problems, len(texts)), np.float32),
        texts=[list(texts) for _ in items],
        answers=[list(texts) for _ in items],
        greedy=np.zeros(problems, np.float32),
        beam=None,
        gen_seconds=0.0,
    )


def test_adapters_start_as_the_base_model_and_only_they_learn(tiny_checkpoint: Path) -> None:
    loaded = load_model(str(tiny_checkpoint), weights="dense")  # as the method loads it
    prompt, responses = [5, 6, 7], [[8, 9], [10]]
    with torch.no_grad():
        before = loaded.model.get_decoder()(input_ids=torch.tensor([prompt + responses[0]]))
    frozen = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    rm = LoraRewardModel(loaded, LoraRewardConfig())
    with torch.no_grad():
        after = rm.backbone(input_ids=torch.tensor([prompt + responses[0]]))
    torch.testing.assert_close(after.last_hidden_state, before.last_hidden_state)

    optimizer = torch.optim.SGD(rm.trainable(), lr=0.1)
    rm(prompt, responses).sum().backward()
    optimizer.step()
    assert all(p.grad is not None for p in rm.trainable())
    for name, p in loaded.model.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), name
    assert any(a.abs().sum() > 0 for a in rm.adapters[1::2])  # the zero-initialised B moved


@pytest.mark.slow  # several seconds; CI runs it
def test_it_learns_to_prefer_the_labelled_response(tiny_checkpoint: Path) -> None:
    pool = _pool(["5", "6", "5", "6"], [1.0, 0.0, 1.0, 0.0], problems=3)
    method = LoraRewardMethod(str(tiny_checkpoint), LoraRewardConfig(steps=40, lr=1e-2))
    ((selector, cost),) = method(pool, pool, get_task("math"), 0)
    assert selector.name == "LoRA RM"
    assert (selector.scores[:, 0] > selector.scores[:, 1]).all()
    assert cost.params > 0 and cost.train_s > 0


def test_tasks_it_is_told_to_skip_get_no_method(tiny_checkpoint: Path) -> None:
    pool = _pool(["5", "6"], [1.0, 0.0], problems=1)
    method = LoraRewardMethod(str(tiny_checkpoint), LoraRewardConfig(skip_tasks=("math",)))
    assert method(pool, pool, get_task("math"), 0) == []
