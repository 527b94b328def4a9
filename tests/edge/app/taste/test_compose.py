"""A user's head composed with the global ranker into one ONNX file, scored by onnxruntime."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge import CorruptModelError, FeatureError
from edge.app.checkpoint import Checkpoint
from edge.app.taste import TasteHead, compose_ranker
from edge.runtime.onnx_meta import (
    META_FEATURE_SIZE,
    META_KIND,
    META_REPRESENTATION,
    META_SIGNAL_NAMES,
    META_SIGNALS_VERSION,
)
from edge.runtime.scoring import RankingSession
from edge.runtime.signals import SIGNAL_NAMES, SIGNALS_VERSION, candidate_signals
from edge.runtime.types import Candidate, Generation

D = 32  # the shared ListRanker fixture's feature size
S = len(SIGNAL_NAMES)


def _head(seed: int = 0, blocks: tuple[str, ...] = ("last", "mean", "signals")) -> TasteHead:
    rng = np.random.default_rng(seed)
    sizes = {"last": D, "mean": D, "signals": S}
    return TasteHead({b: rng.standard_normal(sizes[b]).astype(np.float32) for b in blocks})  # type: ignore[misc]


def _generation(k: int = 5, seed: int = 1) -> Generation:
    rng = np.random.default_rng(seed)
    texts = ["- a\n- b", "Plain answer.", "Wow!!", "", "It's 42?", "ok", "x" * 50][:k]
    cands = tuple(
        Candidate(
            i,
            texts[i],
            tuple(range(i + 1)),
            "eos" if i % 2 else "length",
            -1.5 * (i + 1),
            rng.standard_normal(D).astype(np.float32),
            mean_feature=rng.standard_normal(D).astype(np.float32),
            mean_entropy=0.5 * i if i % 3 else None,
        )
        for i in range(k)
    )
    return Generation("prompt", rng.standard_normal(D).astype(np.float32), cands)


def _means(g: Generation) -> np.ndarray:
    return np.stack([c.mean_feature for c in g.candidates])  # type: ignore[misc]


def test_a_head_alone_scores_its_blocks_and_declares_its_inputs() -> None:
    head = _head()
    session = RankingSession(compose_ranker(head))
    assert session.input_names == ("instruction", "candidates", "mean_candidates", "signals")
    assert session.kind == "personal" and session.feature_size == D
    assert session.signals_version == SIGNALS_VERSION
    assert json.loads(session.metadata[META_REPRESENTATION]) == ["last", "mean", "signals"]
    assert json.loads(session.metadata[META_SIGNAL_NAMES]) == list(SIGNAL_NAMES)
    for k in (1, 3, 7):  # K stays dynamic
        g = _generation(k)
        expected = head.score(g.features, _means(g), candidate_signals(g.candidates))
        np.testing.assert_allclose(session.score_generation(g), expected, rtol=1e-5, atol=1e-5)
    batch = session.score_batch(
        np.stack([g.instruction] * 2),
        np.stack([g.features] * 2),
        mean_candidates=np.stack([_means(g)] * 2),
        signals=np.stack([candidate_signals(g.candidates)] * 2),
    )
    assert batch.shape == (2, 7)


def test_a_zero_head_without_a_global_ranker_keeps_the_first_sample_order() -> None:
    session = RankingSession(compose_ranker(TasteHead.zeros(D)))
    ranking = session.rank_generation(_generation(6))
    np.testing.assert_array_equal(ranking.scores, np.zeros(6, np.float32))
    assert ranking.order.tolist() == [0, 1, 2, 3, 4, 5]


def test_the_global_graph_plus_a_head_is_one_onnx_file(onnx_file: Path) -> None:
    global_model = onnx_file.read_bytes()
    base = RankingSession(global_model)
    g = _generation(6)
    head = _head(2)
    composed = compose_ranker(head, global_model, {"language_ranker.user": "alice"})
    session = RankingSession(composed)
    expected = base.score(g.instruction, g.features) + head.score(
        g.features, _means(g), candidate_signals(g.candidates)
    )
    np.testing.assert_allclose(session.score_generation(g), expected, rtol=1e-5, atol=1e-5)
    assert session.metadata[META_KIND] == "personal"
    assert session.metadata["language_ranker.base_kind"] == "list"
    assert session.metadata["language_ranker.user"] == "alice"
    assert session.metadata[META_FEATURE_SIZE] == str(D)
    # At the cold start (a zero head) the user ranks exactly like the global ranker.
    cold = RankingSession(compose_ranker(TasteHead.zeros(D), global_model))
    np.testing.assert_allclose(
        cold.score_generation(g), base.score(g.instruction, g.features), atol=1e-6
    )
    proto = onnx.load_from_string(composed)
    assert {o.name for o in proto.graph.output} == {"scores"}
    assert len(composed) < len(global_model) + 4 * (2 * D + S) + 4096


def test_a_head_composes_on_a_global_that_already_carries_a_head(onnx_file: Path) -> None:
    """E.g. a global ranker that is itself a pooled head on a task ranker: the
    second head's names must not collide with the first's."""
    base = onnx_file.read_bytes()
    g = _generation(5)
    inner, outer = _head(3), _head(4, ("last", "signals"))
    stacked = compose_ranker(outer, compose_ranker(inner, base))
    expected = (
        RankingSession(base).score(g.instruction, g.features)
        + inner.score(g.features, _means(g), candidate_signals(g.candidates))
        + outer.score(g.features, None, candidate_signals(g.candidates))
    )
    session = RankingSession(stacked)
    np.testing.assert_allclose(session.score_generation(g), expected, rtol=1e-5, atol=1e-5)
    names = [i.name for i in onnx.load_from_string(stacked).graph.initializer]
    assert "personal_head.last.weight" in names and "personal_head2.last.weight" in names
    assert json.loads(session.metadata[META_REPRESENTATION]) == ["last", "mean", "signals"]


def test_a_head_of_the_last_block_only_needs_no_new_inputs(onnx_file: Path) -> None:
    head = _head(3, blocks=("last",))
    session = RankingSession(compose_ranker(head, onnx_file.read_bytes()))
    assert session.input_names == ("instruction", "candidates")
    assert META_SIGNALS_VERSION not in session.metadata
    inst, cand = np.zeros(D, np.float32), np.ones((3, D), np.float32)
    assert session.score(inst, cand).shape == (3,)


def test_missing_or_mis_sized_inputs_are_named() -> None:
    session = RankingSession(compose_ranker(_head()))
    g = _generation(4)
    no_mean = Generation(
        g.prompt,
        g.instruction,
        tuple(Candidate(c.index, c.text, c.token_ids, c.finish_reason, -1.0, c.feature)
              for c in g.candidates),
    )  # fmt: skip
    with pytest.raises(FeatureError, match="'mean_candidates' is missing: candidate 0"):
        session.score_generation(no_mean)
    with pytest.raises(FeatureError, match="'signals' is missing"):
        session.score(g.instruction, g.features, mean_candidates=_means(g))
    expected = rf"'signals' has shape \(4, 3\), expected \(4, {len(SIGNAL_NAMES)}\)"
    with pytest.raises(FeatureError, match=expected):
        session.score(
            g.instruction, g.features, mean_candidates=_means(g), signals=np.zeros((4, 3))
        )
    with pytest.raises(FeatureError, match=r"'mean_candidates' has shape \(4, 31\)"):
        session.score(g.instruction, g.features, mean_candidates=_means(g)[:, :31],
                      signals=candidate_signals(g.candidates))  # fmt: skip
    bad = candidate_signals(g.candidates)
    bad[1, 2] = np.nan
    with pytest.raises(FeatureError, match=r"'signals'.*nan"):
        session.score(g.instruction, g.features, mean_candidates=_means(g), signals=bad)


def test_a_graph_for_other_signals_is_refused_rather_than_fed_wrong_columns() -> None:
    model = onnx.load_from_string(compose_ranker(_head()))
    for prop in model.metadata_props:
        if prop.key == META_SIGNALS_VERSION:
            prop.value = str(SIGNALS_VERSION + 1)
    session = RankingSession(model.SerializeToString())
    message = (
        f"signals version {SIGNALS_VERSION + 1}, this runtime computes version {SIGNALS_VERSION}"
    )
    with pytest.raises(FeatureError, match=message):
        session.score_generation(_generation(3))


def test_head_weights_round_trip_and_bad_archives_are_corrupt() -> None:
    head = _head(4)
    again = TasteHead.from_bytes(head.to_bytes())
    assert again.parts == head.parts and again.signals_version == SIGNALS_VERSION
    for block in head.parts:
        np.testing.assert_array_equal(again.weights[block], head.weights[block])
    assert head.nbytes == 4 * (2 * D + S)
    with pytest.raises(CorruptModelError):
        TasteHead.from_bytes(b"not an archive")
    with pytest.raises(FeatureError, match="signals part has 3 values"):
        TasteHead({"last": np.zeros(D, np.float32), "signals": np.zeros(3, np.float32)})
    with pytest.raises(FeatureError, match="global ranker takes features of 32 values"):
        compose_ranker(
            TasteHead.zeros(8), onnx.load_from_string(compose_ranker(_head())).SerializeToString()
        )


def test_the_graph_weighs_the_global_score_by_one_plus_u_as_numpy_does(onnx_file: Path) -> None:
    global_model = onnx_file.read_bytes()
    base = RankingSession(global_model)
    g = _generation(7, seed=5)
    blocks = _means(g), candidate_signals(g.candidates)
    global_scores = base.score(g.instruction, g.features)
    for u in (-1.75, 0.4):
        head = dataclasses.replace(_head(6), global_weight=u)
        session = RankingSession(compose_ranker(head, global_model))
        numpy_scores = head.score(g.features, *blocks, global_scores=global_scores)
        np.testing.assert_allclose(session.score_generation(g), numpy_scores, rtol=1e-5, atol=1e-5)
        without_u = _head(6).score(g.features, *blocks)
        np.testing.assert_allclose(numpy_scores, without_u + (1 + u) * global_scores, rtol=1e-5)
        assert json.loads(session.metadata["language_ranker.head"])["global_weight"] == u
    # u reverses the global ranker: a head of zeros with u = -2 ranks it upside down.
    reverse = dataclasses.replace(TasteHead.zeros(D), global_weight=-2.0)
    scores = RankingSession(compose_ranker(reverse, global_model)).score_generation(g)
    np.testing.assert_allclose(scores, -global_scores, rtol=1e-6, atol=1e-6)
    # Without a global ranker u weighs nothing: the head's terms alone.
    alone = RankingSession(compose_ranker(dataclasses.replace(_head(6), global_weight=3.0)))
    np.testing.assert_allclose(
        alone.score_generation(g), _head(6).score(g.features, *blocks), rtol=1e-5, atol=1e-5
    )


def test_u_round_trips_and_a_head_saved_before_u_existed_loads_with_u_zero(
    onnx_file: Path,
) -> None:
    head = dataclasses.replace(_head(7), global_weight=-0.8125)
    assert TasteHead.from_bytes(head.to_bytes()).global_weight == -0.8125
    # A format-1 archive, as written before u: no head_format, no global_weight.
    ckpt = head.to_checkpoint()
    old_config = {k: v for k, v in ckpt.config.items() if k not in ("head_format", "global_weight")}
    old_bytes = Checkpoint(ckpt.kind, old_config, ckpt.weights).to_bytes()
    old = TasteHead.from_bytes(old_bytes)
    assert old.global_weight == 0.0 and old.parts == head.parts
    for block in head.parts:
        np.testing.assert_array_equal(old.weights[block], head.weights[block])
    global_model = onnx_file.read_bytes()
    g = _generation(5)
    expected = RankingSession(global_model).score(g.instruction, g.features) + _head(7).score(
        g.features, _means(g), candidate_signals(g.candidates)
    )
    scores = RankingSession(compose_ranker(old, global_model)).score_generation(g)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
    newer = Checkpoint(ckpt.kind, {**ckpt.config, "head_format": 4}, ckpt.weights).to_bytes()
    with pytest.raises(CorruptModelError, match="format 4"):
        TasteHead.from_bytes(newer)
    with pytest.raises(FeatureError, match="global weight is nan"):
        dataclasses.replace(_head(7), global_weight=float("nan"))
