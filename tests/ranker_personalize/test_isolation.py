"""Users' feedback and rankers are kept apart; no ranker learns from another's data."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from edge.app.personal import PersonalRanker
from edge.app.store import FeedbackStore
from ranker_personalize.experiments import Study, StudyConfig
from ranker_personalize.pool import Pool
from ranker_personalize.simulate import SimConfig, generation
from ranker_personalize.users import SimUser

SIM = SimConfig(budgets=(0, 4, 8))


def _device(home: Path, user: str) -> PersonalRanker:
    return PersonalRanker(cast(Any, None), home, user, "chat")  # the torch-free learner


def _give_feedback(device: PersonalRanker, pool: Pool, rows: range, prefer: int) -> None:
    for i in rows:
        shown = device.show(generation(pool, i))
        device.pick(shown, prefer, [j for j in range(pool.settings.k) if j != prefer])


def test_learner_reads_only_its_users_rows_in_a_shared_store(
    pool: Pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[str] = []
    real = FeedbackStore.events

    def spy(self: FeedbackStore, user: str, **kw: Any) -> Any:
        events = real(self, user, **kw)
        read.extend(e.user for e in events)
        return events

    monkeypatch.setattr(FeedbackStore, "events", spy)
    alice, bob = _device(tmp_path, "alice"), _device(tmp_path, "bob")  # one store, one registry
    # Bob's vectors have another size: if any of his rows reached Alice's fit,
    # adding them would fail on the feature size.
    small = replace(
        pool,
        instructions=pool.instructions[:, :8],
        candidates=pool.candidates[..., :8],
        means=pool.means[..., :8],
    )
    _give_feedback(bob, small, range(0, 10), prefer=1)
    _give_feedback(alice, pool, range(0, 10), prefer=0)
    _give_feedback(bob, small, range(10, 20), prefer=1)
    assert alice.learn().updated
    _give_feedback(alice, pool, range(20, 25), prefer=0)
    report = alice.learn()
    assert report.updated and report.replayed_events == 10  # the refit keeps the old events
    assert read and set(read) == {"alice"}
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
                bob.learn()
            _give_feedback(alice, pool, range(start, start + 8), prefer=0)
            alice.learn()
        weights.append(alice.registry.load_weights("alice", "chat"))
    assert weights[0] is not None and weights[0] == weights[1]


@pytest.mark.slow  # several seconds; CI runs it
def test_the_study_checks_isolation_on_a_conflicting_pair(pool: Pool, tmp_path: Path) -> None:
    users = [SimUser("concise", "concise"), SimUser("verbose", "verbose")]
    train, test = pool.subset(range(30)), pool.subset(range(30, 40))
    study = Study(train, test, users, StudyConfig(seeds=(0,), sim=SIM), tmp_path)
    study.curves()
    study.isolation()
    iso = study.results["isolation"]
    assert iso["pair"] == ["concise", "verbose"]
    for name in ("concise", "verbose"):
        assert iso[name]["weights_equal"] and iso[name]["picks_equal"]
        assert iso[name]["store_users"] == ["concise", "verbose"]
        assert iso[name]["own_events"] == max(SIM.budgets)
    for user in users:  # and in the curves each user lived in their own home
        home = tmp_path / "curves-signals" / "seed0" / user.name
        with FeedbackStore(home / "feedback.sqlite3") as store:
            assert store.users() == [user.name]
            assert len(store.events(user.name)) == max(SIM.budgets)
        assert sorted(p.name for p in (home / "rankers" / "users").iterdir()) == [user.name]
    assert np.isfinite(study._personal["signals"]["concise"][0][8]).all()
