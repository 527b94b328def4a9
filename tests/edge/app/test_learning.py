"""The learner seam: both learners build from their config, learn through one protocol and
return one report; PersonalRanker builds its learner once and computes signals once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edge.runtime.signals as signals_module
from edge.app.learning import LearnerSpec, LearnReport, UserLearner
from edge.app.personal import PersonalRanker
from edge.app.registry import Registry
from edge.app.store import FeedbackStore
from edge.app.taste import TasteConfig, TasteHead, TasteLearner, compose_ranker
from edge.runtime.signals import SIGNAL_NAMES
from edge.training.learner import Learner, LearnerConfig
from edge.training.loop import TrainConfig
from tests.edge.app._generations import generation

D = 32


class _Counting:
    """A LearnerSpec around a real config, counting how often PersonalRanker builds it."""

    def __init__(self, inner: LearnerSpec) -> None:
        self.inner, self.builds = inner, 0

    def build(self, store: FeedbackStore, registry: Registry) -> UserLearner:
        self.builds += 1
        return self.inner.build(store, registry)


def _teach(me: PersonalRanker, seeds: range) -> list[LearnReport]:
    reports = []
    for seed in seeds:
        g, liked = generation(seed)
        me.pick(me.show(g), liked[0])
        reports.append(me.learn())
    return reports


@pytest.mark.parametrize(
    "config",
    [TasteConfig(), LearnerConfig(kind="point", train=TrainConfig(min_steps=3), parity_ks=(2,))],
    ids=["taste", "torch"],
)
def test_both_learners_are_built_once_and_report_the_same_way(
    config: LearnerSpec, tmp_path: Path
) -> None:
    spec = _Counting(config)
    me = PersonalRanker(None, tmp_path, "ann", "chat", learner=spec)  # type: ignore[arg-type]
    assert spec.builds == 1 and isinstance(me.learner, TasteLearner | Learner)
    built = me.learner
    reports = _teach(me, range(3))
    assert spec.builds == 1 and me.learner is built  # learn() never rebuilds it
    for n, report in enumerate(reports, start=1):
        assert type(report) is LearnReport and report.updated and report.new_events == 1
        assert report.version == n  # the number, not a registry record
        assert report.saved is not None and report.saved.version == n
        assert report.cursor == report.saved.metadata["cursor"]
    assert me.version == len(reports)
    skipped = me.learn()  # nothing new
    assert type(skipped) is LearnReport and not skipped.updated and skipped.version is None
    me.close()


def test_the_torch_learner_starts_from_its_configs_base(tmp_path: Path, list_ranker) -> None:
    config = LearnerConfig(base=list_ranker.to_checkpoint(), parity_ks=(2,))
    me = PersonalRanker(None, tmp_path, "bea", "chat", learner=config)  # type: ignore[arg-type]
    (report,) = _teach(me, range(1))
    assert report.started_from == "base" and report.fit is None
    me.close()


def test_show_computes_the_signals_once_for_ranking_and_for_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A ranker that reads the signals, so ranking needs them as well as the store.
    rng = np.random.default_rng(0)
    head = TasteHead(
        {
            "last": rng.standard_normal(D).astype(np.float32),
            "signals": rng.standard_normal(len(SIGNAL_NAMES)).astype(np.float32),
        }
    )
    Registry(tmp_path / "rankers").save(None, "chat", compose_ranker(head))
    me = PersonalRanker(None, tmp_path, "cy", "chat")  # type: ignore[arg-type]
    calls = []
    consensus = signals_module._consensus
    monkeypatch.setattr(
        signals_module, "_consensus", lambda texts: calls.append(len(texts)) or consensus(texts)
    )
    g, _ = generation(3)
    shown = me.show(g)
    assert calls == [len(g.candidates)]  # one computation of the K candidates' signals
    stored = me.store.shown("cy", shown.set_id)
    np.testing.assert_array_equal(stored.signals, signals_module.candidate_signals(g.candidates))
    me.close()


_LEARNERS = [
    TasteConfig(),
    TasteConfig(reduce_above=24, basis_rank=8),  # the 32-d vector parts in a random basis
    LearnerConfig(kind="point", train=TrainConfig(min_steps=3), parity_ks=(2,)),
]


@pytest.mark.parametrize("config", _LEARNERS, ids=["taste", "taste-in-a-basis", "torch"])
def test_after_a_rollback_the_rolled_back_feedback_is_not_learned_again(
    config: LearnerSpec, tmp_path: Path
) -> None:
    me = PersonalRanker(None, tmp_path, "cal", "chat", learner=config)  # type: ignore[arg-type]
    for seed in range(3):  # v1 learns events 1..3
        g, liked = generation(seed)
        me.pick(me.show(g), liked[0])
    assert me.learn().cursor == 3
    for seed in range(3, 6):  # v2 learns 4..6; the user then rejects it
        g, liked = generation(seed)
        me.pick(me.show(g), liked[-1])
    assert me.learn().version == 2
    assert me.rollback() == 1
    assert not me.learn().updated  # nothing new: 4..6 are not new again
    g, liked = generation(6)
    me.pick(me.show(g), liked[0])  # event 7
    report = me.learn()
    assert report.updated and report.new_events == 1 and report.cursor == 7
    assert report.saved is not None and report.saved.metadata["forgotten"] == [[3, 6]]
    if isinstance(me.learner, TasteLearner):  # the history holds v1's events, not 4..6
        assert report.replayed_events == 3
        reduced = {"last", "mean"} if me.learner.config.reduce_above == 24 else set()
        assert set(report.saved.metadata["basis"]) == reduced
    me.close()
    # Another PersonalRanker on the same home reads the same: 4..6 stay forgotten.
    again = PersonalRanker(None, tmp_path, "cal", "chat", learner=config)  # type: ignore[arg-type]
    assert again.registry.forgotten("cal", "chat") == ((3, 6),)
    g, liked = generation(7)
    again.pick(again.show(g), liked[0])
    fresh = again.learn()
    assert fresh.new_events == 1 and fresh.cursor == 8
    if isinstance(again.learner, TasteLearner):
        assert fresh.replayed_events == 4  # 1..3 and 7
    again.close()


def test_the_torch_learner_refuses_a_taste_head_naming_the_way_out(tmp_path: Path) -> None:
    from edge import TrainingError

    taste = PersonalRanker(None, tmp_path, "dan", "chat")  # type: ignore[arg-type]
    _teach(taste, range(1))
    torch_config = LearnerConfig(kind="point", train=TrainConfig(min_steps=3), parity_ks=(2,))
    me = PersonalRanker(None, tmp_path, "dan", "chat", learner=torch_config)  # type: ignore[arg-type]
    g, liked = generation(5)
    me.pick(me.show(g), liked[0])
    with pytest.raises(TrainingError, match=r"dan/chat v1 is a taste head.*TasteConfig"):
        me.learn()
    assert me.registry.current("dan", "chat").version == 1
    taste.close()
    me.close()
