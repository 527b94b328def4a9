"""The few-call app API end to end: real central (tiny model), SQLite, ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.app.personal import PersonalRanker
from edge.app.registry import Registry
from edge.runtime.client import CentralClient
from edge.training.learner import LearnerConfig
from edge.training.loop import TrainConfig


@pytest.fixture()
def central(tiny_server):
    with CentralClient(f"127.0.0.1:{tiny_server.port}", timeout=30) as client:
        yield client


def _fast() -> LearnerConfig:
    return LearnerConfig(kind="point", train=TrainConfig(min_steps=5), parity_ks=(2,))


def _teach(user: PersonalRanker, prompts: int) -> None:
    for i in range(prompts):
        shown = user.generate(f"Write a poem number {i}", k=4, max_new_tokens=4, seed=i)
        for c in shown.generation.candidates:
            user.thumbs(shown, c.index, up=c.index == 0)


def test_generate_feedback_learn_then_rank_with_the_new_version(central, tmp_path: Path) -> None:
    user = PersonalRanker(central, tmp_path, "alice", "chat", learner=_fast())
    assert user.version is None
    first = user.generate("What is two plus three?", k=4, max_new_tokens=4, seed=0)
    assert first.order == (0, 1, 2, 3) and first.ranker_version is None
    _teach(user, 3)
    report = user.learn()
    assert report.updated and report.new_events == 12 and report.started_from == "scratch"
    assert user.version == 1
    shown = user.generate("What is two plus three?", k=4, max_new_tokens=4, seed=0)
    assert shown.ranker_version == 1
    scores = user.rank(shown.generation).scores
    assert scores.shape == (4,) and np.isfinite(scores).all() and np.ptp(scores) > 0


@pytest.mark.slow  # several seconds; CI runs it
def test_learning_twice_hot_swaps_and_rollback_returns(central, tmp_path: Path) -> None:
    user = PersonalRanker(central, tmp_path, "bob", "math", learner=_fast())
    _teach(user, 2)
    user.learn()
    _teach(user, 2)
    second = user.learn()
    assert second.started_from == "user" and user.version == 2
    assert user.rollback() == 1 and user.version == 1


def test_a_restarted_app_ranks_with_the_saved_version(central, tmp_path: Path) -> None:
    user = PersonalRanker(central, tmp_path, "carol", learner=_fast())
    _teach(user, 2)
    user.learn()
    user.close()
    again = PersonalRanker(central, tmp_path, "carol")
    assert again.version == 1


def test_users_learn_only_from_their_own_feedback(central, tmp_path: Path) -> None:
    alice = PersonalRanker(central, tmp_path, "alice", learner=_fast())
    bob = PersonalRanker(central, tmp_path, "bob", learner=_fast())
    _teach(alice, 3)
    _teach(bob, 1)
    assert bob.learn().new_events == 4
    assert alice.learn().new_events == 12


def test_a_new_user_may_rank_with_the_global_ranker_until_their_first_update(
    central, tmp_path: Path
) -> None:
    """``cold_start="global"``: the global ranks from the first answer (the default shows
    the first sample, tests/edge/app/taste/test_learner.py)."""
    from edge.training.export import export_onnx
    from edge.training.rankers import build_ranker, make_config

    shared = build_ranker(make_config("point", 64), seed=3)
    Registry(tmp_path / "rankers").save_global(
        "chat", export_onnx(shared, exporter="torchscript"),
        weights=shared.to_checkpoint().to_bytes(),
    )  # fmt: skip
    user = PersonalRanker(central, tmp_path, "dave", "chat", learner=_fast(), cold_start="global")
    shown = user.generate("Write a poem", k=4, max_new_tokens=4, seed=0)
    global_order = tuple(int(i) for i in np.argsort(-_global_scores(shared, shown), kind="stable"))
    assert shown.order == global_order and user.version is None
    _teach(user, 2)
    report = user.learn()
    assert report.started_from == "global" and user.version == 1


def _global_scores(model, shown) -> np.ndarray:
    import torch

    g = shown.generation
    with torch.no_grad():
        return model.eval()(
            torch.from_numpy(g.instruction)[None], torch.from_numpy(g.features)[None]
        )[0].numpy()


def test_generate_asks_central_for_representation_v2_and_the_greedy_answer(
    tiny_server, tmp_path
) -> None:
    from edge.app.personal import PersonalRanker
    from edge.runtime.client import CentralClient

    with CentralClient(f"127.0.0.1:{tiny_server.port}") as central:
        me = PersonalRanker(central, tmp_path, "alice", "chat")
        shown = me.generate("Say something.", k=3, max_new_tokens=4, seed=0)
        greedy = central.generate("Say something.", 1, max_new_tokens=4, temperature=0.0)
        me.close()
    for candidate in shown.generation.candidates:
        assert candidate.mean_feature is not None
        assert candidate.mean_feature.shape == candidate.feature.shape
        assert candidate.mean_entropy is not None and candidate.mean_entropy >= 0.0
    # and for the greedy answer as candidate 0
    assert shown.generation.candidates[0].token_ids == greedy.candidates[0].token_ids
