from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge import UnknownUserError
from edge.app.checkpoint import Checkpoint
from edge.app.registry import Registry
from edge.app.store import FeedbackStore
from edge.training.learner import Learner, LearnerConfig
from edge.training.rankers import build_ranker, make_config
from edge.training.synthetic import planted_dataset

D = 16
REPO = Path(__file__).resolve().parents[3]


def _record(store: FeedbackStore, user: str, start: int, count: int, task: str = "chat") -> None:
    """Show planted groups and give a thumbs up to the good one, down to another."""
    data = planted_dataset(count, 4, D, seed=start)
    block = data.blocks[0]
    for g in range(count):
        set_id = f"{task}-{start + g}"
        store.record_shown(user, set_id, block.instructions[g], block.candidates[g], task=task)
        good = int(np.argmax(block.labels[g]))
        store.thumbs(user, set_id, good, up=True)
        store.thumbs(user, set_id, (good + 1) % 4, up=False)


@pytest.fixture
def parts(tmp_path: Path) -> tuple[FeedbackStore, Registry]:
    with FeedbackStore(tmp_path / "fb.db") as store:
        yield store, Registry(tmp_path / "reg")


@pytest.mark.slow  # several seconds; CI runs it
def test_learn_from_scratch_then_incrementally(parts: tuple[FeedbackStore, Registry]) -> None:
    store, registry = parts
    learner = Learner(store, registry, LearnerConfig(kind="point"))
    with pytest.raises(UnknownUserError):
        learner.learn("alice", "chat")
    _record(store, "alice", 0, 60)
    first = learner.learn("alice", "chat")
    assert first.updated and first.started_from == "scratch"
    assert first.version == 1 and first.saved is not None
    assert first.new_events == 120 and first.replayed_events == 0
    assert first.cursor == store.last_cursor("alice")
    assert first.loss_after < first.loss_before
    assert registry.current("alice", "chat").metadata["cursor"] == first.cursor

    nothing = learner.learn("alice", "chat")
    assert not nothing.updated and nothing.version is None
    assert len(registry.versions("alice", "chat")) == 1

    _record(store, "alice", 1000, 10)
    second = learner.learn("alice", "chat")
    assert second.started_from == "user" and second.version == 2
    assert second.new_events == 20 and second.replayed_events > 0

    # The saved version ranks held-out planted groups well, with onnxruntime only.
    ranker = registry.open("alice", "chat")
    test = planted_dataset(100, 4, D, seed=555).blocks[0]
    hits = [
        ranker.rank(test.instructions[g], test.candidates[g]).best == np.argmax(test.labels[g])
        for g in range(100)
    ]
    assert np.mean(hits) > 0.6  # chance is 0.25


@pytest.mark.slow  # several seconds; CI runs it
def test_new_user_starts_from_base_or_global(parts: tuple[FeedbackStore, Registry]) -> None:
    store, registry = parts
    base = build_ranker(make_config("list", D, hidden_size=16), seed=4)
    _record(store, "bob", 0, 5)
    report = Learner(store, registry, LearnerConfig(base=base.to_checkpoint())).learn("bob", "chat")
    assert report.started_from == "base"
    weights = registry.load_weights("bob", "chat")
    assert weights is not None
    assert Checkpoint.from_bytes(weights).config["hidden_size"] == 16

    registry.save_global("chat", b"unused-onnx", weights=base.to_checkpoint().to_bytes())
    _record(store, "carol", 0, 5)
    assert Learner(store, registry).learn("carol", "chat").started_from == "global"


def test_swift_weights_are_refused_by_name_wherever_they_come_from(
    parts: tuple[FeedbackStore, Registry],
) -> None:
    from edge import ConfigError, TrainingError

    store, registry = parts
    swift = build_ranker(make_config("swift", D)).to_checkpoint()
    with pytest.raises(ConfigError, match="Learner takes 'list' or 'point' rankers; 'swift'"):
        LearnerConfig(base=swift)
    registry.save_global("chat", b"unused-onnx", weights=swift.to_bytes())
    _record(store, "gus", 0, 3)
    with pytest.raises(TrainingError, match=r"Learner \(global weights\) .* 'swift' needs"):
        Learner(store, registry).learn("gus", "chat")
    assert not registry.has("gus", "chat")


def test_tasks_are_separate_rankers(parts: tuple[FeedbackStore, Registry]) -> None:
    store, registry = parts
    _record(store, "dan", 0, 5, task="chat")
    _record(store, "dan", 0, 5, task="math")
    learner = Learner(store, registry, LearnerConfig(kind="point"))
    assert learner.learn("dan", "math").new_events == 10
    assert registry.rankers("dan") == ["math"]
    assert learner.learn("dan", "chat").updated
    assert registry.rankers("dan") == ["chat", "math"]


@pytest.mark.slow  # several seconds; CI runs it
def test_per_event_config_learns_one_event_at_a_time(parts: tuple[FeedbackStore, Registry]) -> None:
    store, registry = parts
    learner = Learner(store, registry, LearnerConfig.per_event(kind="point"))
    assert learner.config.exporter == "template" and learner.config.replay_size == 32
    _record(store, "erin", 0, 40)
    assert learner.learn("erin", "chat").updated
    data = planted_dataset(30, 4, D, seed=77).blocks[0]
    for g in range(30):  # then one update per event, each a new version
        store.record_shown(
            "erin", f"late-{g}", data.instructions[g], data.candidates[g], task="chat"
        )
        event = store.thumbs("erin", f"late-{g}", int(np.argmax(data.labels[g])), up=True)
        report = learner.learn("erin", "chat")
        assert report.updated and report.new_events == 1 and report.cursor == event
        assert report.started_from == "user" and report.version == g + 2
    ranker = registry.open("erin", "chat")
    test = planted_dataset(100, 4, D, seed=555).blocks[0]
    hits = ranker.score_batch(test.instructions, test.candidates).argmax(1) == test.labels.argmax(1)
    assert hits.mean() > 0.6  # chance is 0.25


@pytest.mark.slow  # several seconds; CI runs it
def test_bad_export_never_becomes_current(
    parts: tuple[FeedbackStore, Registry], monkeypatch: pytest.MonkeyPatch
) -> None:
    import edge.training.learner as learner_mod
    from edge import ExportError
    from edge.training.export import export_onnx

    store, registry = parts
    learner = Learner(store, registry, LearnerConfig.per_event(kind="list"))
    _record(store, "fay", 0, 5)
    good = learner.learn("fay", "chat")
    _record(store, "fay", 500, 1)
    other = build_ranker(make_config("point", D), seed=9)  # loads, but scores differently
    monkeypatch.setattr(learner_mod, "export_onnx", lambda *a, **kw: export_onnx(other))
    with pytest.raises(ExportError):
        learner.learn("fay", "chat")
    assert registry.current("fay", "chat").version == good.version
    assert registry.current("fay", "chat").metadata["cursor"] == good.cursor
    monkeypatch.undo()
    retried = learner.learn("fay", "chat")  # the same events are learned on the next try
    assert (
        retried.new_events == 2 and good.version is not None and retried.version == good.version + 1
    )


def test_warm_model_is_not_used_after_a_rollback(parts: tuple[FeedbackStore, Registry]) -> None:
    store, registry = parts
    learner = Learner(store, registry, LearnerConfig.per_event(kind="point"))
    _record(store, "gus", 0, 5)
    learner.learn("gus", "chat")
    _record(store, "gus", 100, 5)
    learner.learn("gus", "chat")
    registry.rollback("gus", "chat")  # back to v1: the warm model (v2's weights) must not be used
    v1 = Checkpoint.from_bytes(registry.load_weights("gus", "chat", 1))
    model, origin = learner._initial("gus", "chat", registry.current("gus", "chat"), D)
    assert origin == "user"
    for key, value in model.to_checkpoint().weights.items():
        np.testing.assert_array_equal(value, v1.weights[key])


def test_a_v2_ranker_learns_from_the_stored_mean_vectors_and_signals(
    parts: tuple[FeedbackStore, Registry],
) -> None:
    from edge import TrainingError
    from edge.runtime.signals import text_signals

    store, registry = parts
    # The taste shows only in the mean vectors: a last-token ranker could not learn it.
    data = planted_dataset(60, 4, D, seed=3, mean=True, planted=("mean",))
    block = data.blocks[0]
    texts = ["Yes!", "- a\n- b", "It depends.", "42"]
    for g in range(60):
        store.record_shown(
            "hal", f"s{g}", block.instructions[g], block.candidates[g], task="chat",
            mean_candidates=block.mean_candidates[g], texts=texts,  # type: ignore[index]
        )  # fmt: skip
        good = int(np.argmax(block.labels[g]))
        store.thumbs("hal", f"s{g}", good, up=True)
        store.thumbs("hal", f"s{g}", (good + 1) % 4, up=False)
    overrides = {"vectors": ("last", "mean"), "signals": True}
    learner = Learner(store, registry, LearnerConfig(kind="point", ranker_overrides=overrides))
    report = learner.learn("hal", "chat")
    assert report.updated and report.started_from == "scratch"
    ranker = registry.open("hal", "chat")
    assert ranker.session.input_names == ("instruction", "candidates", "mean_candidates", "signals")
    test = planted_dataset(100, 4, D, seed=555, mean=True, planted=("mean",)).blocks[0]
    signals = np.stack([text_signals(texts)] * 100)
    scores = ranker.score_batch(
        test.instructions, test.candidates, mean_candidates=test.mean_candidates, signals=signals
    )
    assert (scores.argmax(1) == test.labels.argmax(1)).mean() > 0.6  # chance is 0.25
    # a set recorded without mean vectors cannot teach a ranker that reads them
    store.record_shown("hal", "old", block.instructions[0], block.candidates[0], task="chat")
    store.thumbs("hal", "old", 0, up=True)
    with pytest.raises(TrainingError, match="reads 'mean_candidates' but 1 of the dataset's"):
        learner.learn("hal", "chat")


_WORKER = """
import json, os, sys, time
import torch
from edge.app.registry import Registry
from edge.app.store import FeedbackStore
from edge.training.learner import Learner, LearnerConfig

torch.set_num_threads(1)
root = sys.argv[1]
store = FeedbackStore(root + "/fb.db")
learner = Learner(store, Registry(root + "/reg"), LearnerConfig.per_event(kind="point"))
print("READY", flush=True)
while True:
    stopping = os.path.exists(root + "/stop")
    try:
        report = learner.learn("zed", "chat")
    except Exception as error:  # UnknownUserError until the first event
        if type(error).__name__ != "UnknownUserError":
            raise
        report = None
    if report is not None and report.updated:
        print(json.dumps([report.version, report.cursor, report.new_events]), flush=True)
    if stopping:
        break
    time.sleep(0.01)
"""


@pytest.mark.slow  # two processes import torch; ~20 s
def test_two_processes_learning_one_user_learn_each_event_once(tmp_path: Path) -> None:
    """Issue 25: two torch learners on one user moved the cursor back and trained 160
    times for 90 events. Under the registry's lock each event is learned once."""
    import json
    import os
    import subprocess
    import sys
    import time

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "protos")])}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    for worker in workers:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "READY"
    with FeedbackStore(tmp_path / "fb.db") as store:
        for start in range(15):  # 15 sets, 2 thumbs each: 30 events, while both learn
            _record(store, "zed", 100 * start, 1)
            time.sleep(0.05)
        total = store.last_cursor("zed")
    (tmp_path / "stop").touch()
    reports = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
        reports += [json.loads(line) for line in out.splitlines() if line.startswith("[")]
    reports.sort()
    versions = [v for v, _, _ in reports]
    cursors = [c for _, c, _ in reports]
    assert versions == list(range(1, len(reports) + 1))  # no two saves of one number
    assert cursors == sorted(set(cursors))  # the cursor only moves forward
    assert sum(n for _, _, n in reports) == total == 30  # each event learned once
    assert cursors[-1] == total
