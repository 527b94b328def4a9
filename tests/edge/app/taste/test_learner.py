"""The torch-free personal learner end to end: feedback -> head -> one ONNX ranker -> rank.

The users here like list-formatted answers (``_generations``): the signals see
that, the random vectors do not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edge import ConfigError
from edge.app.personal import PersonalRanker
from edge.app.registry import Registry
from edge.app.store import FeedbackStore
from edge.app.taste import TasteHead, TasteLearner, compose_ranker, memory
from edge.runtime.scoring import RankingSession
from tests.edge.app._generations import generation

REPO = Path(__file__).resolve().parents[4]
D = 32  # the shared ListRanker fixture's feature size
K = 5


@pytest.fixture(autouse=True)
def _fresh_process_state() -> None:
    """Each test starts like a fresh app process: no rows held from another test."""
    memory.ROWS.clear()


def _teach(me: PersonalRanker, seeds: range) -> None:
    for seed in seeds:
        g, liked = generation(seed)
        shown = me.show(g)
        me.pick(shown, liked[0])
        me.learn()


def _top1(me: PersonalRanker, seeds: range) -> float:
    hits = []
    for seed in seeds:
        g, liked = generation(seed)
        hits.append(int(me.rank(g).order[0]) in liked)
    return float(np.mean(hits))


@pytest.mark.slow  # several seconds; CI runs it
def test_a_new_user_starts_at_the_first_sample_and_moves_from_the_first_event(
    tmp_path: Path,
) -> None:
    me = PersonalRanker(None, tmp_path, "alice", "chat")  # type: ignore[arg-type]
    held_out = range(1000, 1060)
    g, _ = generation(1000)
    assert me.rank(g).order.tolist() == list(range(K)) and me.version is None
    first_sample = _top1(me, held_out)
    _teach(me, range(1))
    assert me.version == 1 and me.registry.current("alice", "chat").metadata["cursor"] == 1
    assert _top1(me, held_out) > first_sample  # one pick already moves the ranking
    _teach(me, range(1, 15))
    assert _top1(me, held_out) >= 0.9 > first_sample + 0.3
    last = me.registry.current("alice", "chat")
    assert last.metadata["learner"] == "taste_head" and last.metadata["events"] == 15
    assert last.metadata["blocks"] == ["last", "mean", "signals", "lexicon"]
    weights = me.registry.load_weights("alice", "chat")
    assert weights is not None and len(weights) < 64 * 1024


def test_each_update_reports_what_it_learned(tmp_path: Path) -> None:
    me = PersonalRanker(None, tmp_path, "bob", "chat")  # type: ignore[arg-type]
    for seed in range(3):
        g, liked = generation(seed)
        me.pick(me.show(g), liked[0])
    report = me.learn()
    assert report.updated and report.new_events == 3 and report.replayed_events == 0
    assert report.started_from == "scratch" and report.cursor == 3
    assert report.loss_after < report.loss_before
    assert report.examples == 3 * (K - 1)
    again = me.learn()  # nothing new: no update, nothing saved
    assert not again.updated and me.version == 1
    g, liked = generation(3)
    me.thumbs(me.show(g), liked[0], up=True)
    report = me.learn()
    assert report.started_from == "user" and report.warm_version == 1
    assert (report.new_events, report.replayed_events, report.cursor) == (1, 3, 4)
    assert me.rollback() == 1 and me.version == 1


def test_with_a_global_ranker_a_new_user_sees_the_first_sample_then_learns_on_top(
    tmp_path: Path, onnx_file: Path
) -> None:
    """Cold start: the first sample until the first update (never below it at 0
    events), then the global ranker as the offset of the user's head; the global
    ranking from the first answer is an option."""
    global_model = onnx_file.read_bytes()
    Registry(tmp_path / "rankers").save_global("chat", global_model)
    base = RankingSession(global_model)
    g, liked = generation(7)
    expected = np.argsort(-base.score(g.instruction, g.features), kind="stable")
    assert expected.tolist() != list(range(K))  # the two rules differ on this generation
    early = PersonalRanker(None, tmp_path, "erin", "chat", cold_start="global")  # type: ignore[arg-type]
    assert early.rank(g).order.tolist() == expected.tolist() and early.version is None
    with pytest.raises(ConfigError, match="cold_start"):
        PersonalRanker(None, tmp_path, "erin", "chat", cold_start="best")  # type: ignore[arg-type]
    me = PersonalRanker(None, tmp_path, "carol", "chat")  # type: ignore[arg-type]
    assert me.rank(g).order.tolist() == list(range(K)) and me.version is None
    shown = me.show(g)
    assert shown.order == tuple(range(K)) and shown.best.index == 0
    me.pick(shown, liked[0])
    report = me.learn()
    assert report.started_from == "global" and report.global_version == 1
    # The user's ranker is the global graph plus the saved head, in one file.
    head = TasteHead.from_bytes(me.registry.load_weights("carol", "chat") or b"")
    g2, _ = generation(8)
    means = np.stack([c.mean_feature for c in g2.candidates])  # type: ignore[misc]
    from edge.runtime.lexicon import candidate_lexicon
    from edge.runtime.signals import candidate_signals

    # (1 + u) times the global score, plus the head's terms; the pick moved u.
    assert head.parts == ("last", "mean", "signals", "lexicon")
    global_scores = base.score(g2.instruction, g2.features)
    signals, lexicon = candidate_signals(g2.candidates), candidate_lexicon(g2.candidates)
    terms = head.score(g2.features, means, signals, lexicon=lexicon)
    want = (1 + head.global_weight) * global_scores + terms
    np.testing.assert_allclose(me.rank(g2).scores, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        head.score(g2.features, means, signals, global_scores, lexicon=lexicon), want,
        rtol=1e-5, atol=1e-5,
    )  # fmt: skip
    assert head.global_weight != 0.0
    meta = me.registry.current("carol", "chat").metadata
    assert meta["global_version"] == 1 and meta["global_weight"] == head.global_weight
    ranker_meta = RankingSession(me.registry.load_model("carol", "chat")).metadata
    assert ranker_meta["language_ranker.base_kind"] == "list"


def test_a_damaged_current_head_falls_back_to_the_last_good_one_for_learning(
    tmp_path: Path,
) -> None:
    me = PersonalRanker(None, tmp_path, "dave", "chat")  # type: ignore[arg-type]
    _teach(me, range(2))
    assert me.version == 2
    current = me.registry.current("dave", "chat")
    path = tmp_path / "rankers/users/dave/chat" / str(current.weights_file)
    path.write_bytes(path.read_bytes()[:100])  # torn write
    memory.ROWS.clear()  # as in a new process
    g, liked = generation(2)
    me.pick(me.show(g), liked[0])
    report = me.learn()
    assert report.updated and report.started_from == "user" and report.warm_version == 1
    assert report.new_events == 1 and report.version is not None
    assert report.version == 3 and me.version == 3


def test_a_head_is_never_mixed_with_another_feature_size(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "rankers")
    old = TasteHead.zeros(8)  # e.g. a head learned over another model's 8-d features
    registry.save("erin", "chat", compose_ranker(old), weights=old.to_bytes())
    with FeedbackStore(tmp_path / "feedback.sqlite3") as store:
        for seed in range(2):
            g, liked = generation(seed)
            store.record_generation("erin", f"s{seed}", g, task="chat")
            store.pick("erin", f"s{seed}", liked[0])
        learner = TasteLearner(store, registry)
        report = learner.learn("erin", "chat")
        assert report.updated and report.started_from == "scratch" and report.warm_version is None
        assert RankingSession(registry.load_model("erin", "chat")).feature_size == D
        # The app switches to a model with 16-d features: its taste is learned anew.
        for seed in range(2, 5):
            g, liked = generation(seed, d=16)
            store.record_generation("erin", f"s{seed}", g, task="chat")
            store.pick("erin", f"s{seed}", liked[0])
        report = learner.learn("erin", "chat")
    assert report.updated and report.started_from == "scratch"
    assert RankingSession(registry.load_model("erin", "chat")).feature_size == 16
    assert registry.current("erin", "chat").metadata["events"] == 3


_SCRIPT_PRELUDE = (
    "import sys\nsys.path.insert(0, sys.argv[1])\n"
    "from tests.edge.app._generations import generation\n"
)


def _run(code: str, *args: str, block_torch: bool = False) -> subprocess.CompletedProcess[str]:
    blocker = "import sys\nsys.modules['torch'] = None\n" if block_torch else ""
    return subprocess.run(
        [sys.executable, "-c", blocker + _SCRIPT_PRELUDE + textwrap.dedent(code), str(REPO), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )


_LEARN_WITHOUT_TORCH = """
    import json
    from edge.app.personal import PersonalRanker

    me = PersonalRanker(None, sys.argv[2], "zoe", "chat")
    def top1(seeds):
        return sum(int(me.rank(generation(s)[0]).order[0]) in generation(s)[1] for s in seeds)
    before = top1(range(500, 540))
    for seed in range(12):
        g, liked = generation(seed)
        me.pick(me.show(g), liked[0])
        report = me.learn()
    assert sys.modules["torch"] is None and "edge.training" not in sys.modules
    print(json.dumps({"before": before, "after": top1(range(500, 540)),
                      "version": me.version, "updated": report.updated}))
"""


@pytest.mark.slow  # several seconds; CI runs it
def test_feedback_learning_and_ranking_work_where_torch_cannot_be_imported(
    tmp_path: Path,
) -> None:
    proc = _run(_LEARN_WITHOUT_TORCH, str(tmp_path), block_torch=True)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["version"] == 12 and out["updated"]
    assert out["after"] >= 36 > out["before"] + 10  # of 40 held-out prompts


_LEARNER_PROCESS = """
    from edge.app.personal import PersonalRanker

    me = PersonalRanker(None, sys.argv[2], "pat", "chat")
    for i in range(int(sys.argv[4])):
        g, liked = generation(int(sys.argv[3]) * 1000 + i)
        me.pick(me.show(g), liked[0])
        me.learn()
"""


@pytest.mark.slow  # several seconds; CI runs it
def test_two_learner_processes_on_one_user_never_lose_an_update(tmp_path: Path) -> None:
    events = 12
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SCRIPT_PRELUDE + textwrap.dedent(_LEARNER_PROCESS),
             str(REPO), str(tmp_path), str(worker), str(events)],
            cwd=REPO,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            stderr=subprocess.PIPE,
            text=True,
        )
        for worker in (1, 2)
    ]  # fmt: skip
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    registry = Registry(tmp_path / "rankers")
    final = registry.current("pat", "chat")
    assert final.metadata["events"] == 2 * events  # both processes' events, all learned
    assert final.metadata["cursor"] == 2 * events
    cursors = [v.metadata["cursor"] for v in registry.versions("pat", "chat")]
    assert cursors == sorted(cursors)  # the learned cursor never went backwards
    assert len(registry.versions("pat", "chat")) == 10  # pruned to the default keep


def test_a_restarted_learner_keeps_the_users_mix_of_heads(tmp_path: Path) -> None:
    """Each version records every head's prequential evidence; a fresh process (no
    rows held) rebuilds the rows from the store and continues with that mix
    instead of restarting it even."""
    me = PersonalRanker(None, tmp_path, "erin", "chat")  # type: ignore[arg-type]
    _teach(me, range(12))
    saved = me.registry.current("erin", "chat").metadata
    evidence, mix = saved["head_evidence"], saved["head_mix"]
    assert len(evidence) == len(mix) == 3 and sum(mix) == pytest.approx(1.0)
    assert max(mix) > 0.6  # 12 events already tell the heads apart
    memory.ROWS.clear()  # a new process
    g, liked = generation(12)
    me.pick(me.show(g), liked[0])
    report = me.learn()
    assert report.updated and report.fit is not None
    # The rebuilt rows are charged to every head alike (they all restart from the
    # saved mix), so the shares move only by the one new event's evidence.
    assert np.argmax(report.fit.mix) == np.argmax(mix) and max(report.fit.mix) > 0.6
    after = me.registry.current("erin", "chat").metadata["head_evidence"]
    assert all(a >= b for a, b in zip(after, evidence, strict=True))


def test_a_set_recorded_without_texts_adds_no_lexicon_information(tmp_path: Path) -> None:
    """The lexicon is fitted when the newest set has texts; an older set without texts
    (an app that stored none) gives zeros in the lexicon's columns, never counts of
    empty answers mixed with real ones; a user whose sets all lack texts fits none."""
    me = PersonalRanker(None, tmp_path, "dana", "chat")  # type: ignore[arg-type]
    g, liked = generation(3)
    me.store.record_shown("dana", "bare", g.instruction, g.features, task="chat")
    me.store.pick("dana", "bare", liked[0])
    assert me.learn().updated
    head = TasteHead.from_bytes(me.registry.load_weights("dana", "chat") or b"")
    assert "lexicon" not in head.parts
    me.pick(me.show(generation(4)[0]), 0)
    me.learn()
    head = TasteHead.from_bytes(me.registry.load_weights("dana", "chat") or b"")
    assert head.parts == ("last", "mean", "signals", "lexicon")
    key = (str((tmp_path / "feedback.sqlite3").resolve()), "dana", "chat")
    held = memory.ROWS.take(key)
    assert held is not None
    lo, hi = held.fit.rows.spans["lexicon"]
    rows = held.fit.rows.full()
    first, second = held.fit.rows.firsts
    assert not rows[first:second, lo:hi].any()  # the set without texts
    assert rows[second:, lo:hi].any()  # the set with them
