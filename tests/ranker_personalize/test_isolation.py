"""Item 6: users' feedback and rankers are kept apart; no ranker trains on another's data."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

import edge.training.learner
from edge.app.personal import PersonalRanker
from edge.app.store import FeedbackStore
from ranker_personalize.experiments import Study, StudyConfig
from ranker_personalize.pool import Pool
from ranker_personalize.simulate import SimConfig, generation, learner_config
from ranker_personalize.users import SimUser

SIM = SimConfig(budgets=(0, 4, 8), update_every=4, min_steps=3)


def _device(home: Path, user: str) -> PersonalRanker:
    return PersonalRanker(cast(Any, None), home, user, "chat", learner=learner_config(SIM, 0))


def _give_feedback(device: PersonalRanker, pool: Pool, rows: range, prefer: int) -> None:
    for i in rows:
        shown = device.show(generation(pool, i))
        device.pick(shown, prefer, [j for j in range(pool.settings.k) if j != prefer])


def test_learner_reads_only_its_users_rows_in_a_shared_store(
    pool: Pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    real = edge.training.learner.events_to_dataset

    def spy(events: Any, **kw: Any) -> Any:
        events = list(events)
        seen.extend(e.user for e in events)
        return real(events, **kw)

    monkeypatch.setattr(edge.training.learner, "events_to_dataset", spy)
    alice, bob = _device(tmp_path, "alice"), _device(tmp_path, "bob")  # one store, one registry
    # Bob's features have another size: if any of his rows reached Alice's training
    # data, building her dataset would fail on mixed feature sizes.
    small = replace(
        pool, instructions=pool.instructions[:, :8], candidates=pool.candidates[..., :8]
    )
    _give_feedback(bob, small, range(0, 10), prefer=1)
    _give_feedback(alice, pool, range(0, 10), prefer=0)
    _give_feedback(bob, small, range(10, 20), prefer=1)
    assert alice.learn().updated
    _give_feedback(alice, pool, range(20, 25), prefer=0)
    assert alice.learn().replayed_events > 0  # the second update replays old events too
    assert seen and set(seen) == {"alice"}
    assert alice.registry.has("alice", "chat") and not alice.registry.has("bob", "chat")
    assert alice.registry.users() == ["alice"]
    assert len(bob.store.events("bob")) == 20 and len(alice.store.events("alice")) == 15


def test_other_users_feedback_leaves_the_ranker_bitwise_unchanged(
    pool: Pool, tmp_path: Path
) -> None:
    """Alice alone vs Alice sharing a device with Bob, who likes the opposite: same weights."""
    weights = []
    for home, with_bob in ((tmp_path / "alone", False), (tmp_path / "shared", True)):
        alice, bob = _device(home, "alice"), _device(home, "bob")
        for start in (0, 8):
            if with_bob:
                _give_feedback(bob, pool, range(start, start + 8), prefer=3)
            _give_feedback(alice, pool, range(start, start + 8), prefer=0)
            alice.learn()
        weights.append(alice.registry.load_weights("alice", "chat"))
    assert weights[0] is not None and weights[0] == weights[1]


@pytest.mark.slow  # several seconds; CI runs it
def test_simulated_users_live_in_separate_homes(pool: Pool, tmp_path: Path) -> None:
    users = [SimUser("concise", "concise"), SimUser("lists", "lists")]
    train, test = pool.subset(range(30)), pool.subset(range(30, 40))
    study = Study(train, test, users, StudyConfig(seeds=(0,), sim=SIM), tmp_path)
    study.curves()
    for user in users:
        home = tmp_path / "curves" / "seed0" / user.name
        with FeedbackStore(home / "feedback.sqlite3") as store:
            assert store.users() == [user.name]
            assert len(store.events(user.name)) == max(SIM.budgets)
        assert sorted(p.name for p in (home / "rankers" / "users").iterdir()) == [user.name]
    assert np.isfinite(study.results["users"]["concise"]["personal"][8]["mean"])
