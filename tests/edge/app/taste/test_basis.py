"""Wide parts fitted in a low-rank basis: which basis, the fit in it, the head folded back."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import edge.app.taste.basis as basis_module
from edge import ConfigError, CorruptModelError
from edge.app.personal import PersonalRanker
from edge.app.registry import Registry
from edge.app.taste import Reaction, TasteConfig, TasteFit, TasteHead, compose_ranker, memory
from edge.app.taste.basis import (
    attach_basis,
    choose_bases,
    population_basis,
    random_basis,
    shipped_basis,
)
from edge.runtime.parts import part_layout
from edge.runtime.scoring import RankingSession
from edge.runtime.signals import SIGNAL_NAMES, candidate_signals
from tests.edge.app._generations import generation

REPO = Path(__file__).resolve().parents[4]
D = 32  # the generations' and the shared ListRanker fixture's feature size
S = len(SIGNAL_NAMES)
PARTS = ("last", "mean", "signals")
LAYOUT = part_layout(D, PARTS)  # last 32, mean 32, signals 23
# The 32-d vector parts go into 8 directions; the 23 signals stay whole.
SMALL = TasteConfig(reduce_above=24, basis_rank=8)


@pytest.fixture(autouse=True)
def _fresh_process_state() -> None:
    """Each test starts like a fresh process: no rows nor random bases held."""
    memory.ROWS.clear()
    basis_module._RANDOM.clear()


def _orthonormal(rng: np.random.Generator, width: int, rank: int) -> np.ndarray:
    return np.linalg.qr(rng.standard_normal((width, rank)))[0].astype(np.float32)


def _sets(n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """Sets of 6 whose favourite is the largest along one direction of the last-token
    vectors; every answer of a set shares a large offset."""
    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(3).standard_normal(D)
    out = []
    for _ in range(n):
        last = rng.standard_normal((6, D)) + 20 * rng.standard_normal(D)
        mean, sig = rng.standard_normal((6, D)), rng.standard_normal((6, S))
        out.append((last.astype(np.float32), mean.astype(np.float32), sig.astype(np.float32),
                    int(np.argmax(last @ direction))))  # fmt: skip
    return out


def _teach(me: PersonalRanker, seeds: range) -> None:
    """One pick of a liked answer per generation, each learned at once."""
    for seed in seeds:
        g, liked = generation(seed)
        me.pick(me.show(g), liked[0])
        me.learn()


def _fill(fit: TasteFit, sets: list, project: dict[str, np.ndarray] | None = None) -> None:
    for i, (last, mean, sig, best) in enumerate(sets):
        if project:
            last, mean = last @ project["last"], mean @ project["mean"]
        fit.add_set(str(i), {"last": last, "mean": mean, "signals": sig})
        fit.set_reactions(str(i), [Reaction("pick", best, None, tuple(set(range(6)) - {best}))])


def test_a_random_basis_is_orthonormal_and_the_same_bytes_in_every_process() -> None:
    basis = random_basis(64, 8, 0, "last")
    assert basis.shape == (64, 8) and basis.dtype == np.float32
    np.testing.assert_allclose(basis.T @ basis, np.eye(8), atol=1e-6)
    basis_module._RANDOM.clear()
    assert np.array_equal(random_basis(64, 8, 0, "last"), basis)
    assert not np.allclose(random_basis(64, 8, 0, "mean"), basis)
    assert not np.allclose(random_basis(64, 8, 1, "last"), basis)
    code = (
        "import hashlib; from edge.app.taste.basis import random_basis; "
        "print(hashlib.sha256(random_basis(64, 8, 0, 'last').tobytes()).hexdigest())"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "protos")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == hashlib.sha256(basis.tobytes()).hexdigest(), out.stderr
    with pytest.raises(ConfigError, match="9 directions for a part of width 8"):
        random_basis(8, 9, 0, "last")


def test_a_population_basis_holds_the_directions_along_which_answers_differ() -> None:
    rng = np.random.default_rng(0)
    taste, between = np.eye(64)[0], np.eye(64)[1]
    sets = []
    for _ in range(300):
        # Answers to one prompt differ along `taste` (and noise); prompts differ
        # along `between`, far more, which no ranker of one set can see.
        last = rng.standard_normal((8, 64)) + 4.0 * rng.standard_normal((8, 1)) * taste
        last += 40.0 * rng.standard_normal() * between
        sets.append({"last": last, "signals": rng.standard_normal((8, S)), "mean": None})
    basis = population_basis(sets, rank=4)
    assert set(basis) == {"last", "signals"}  # every part given wider than the rank
    assert set(population_basis(sets, rank=4, parts=("last",))) == {"last"}
    assert set(population_basis(sets, rank=32)) == {"last"}  # 23 signals: no basis at 32
    last = basis["last"]
    np.testing.assert_allclose(last.T @ last, np.eye(4), atol=1e-5)
    assert abs(last[:, 0] @ taste) > 0.99  # the first direction is the taste's
    # The prompts' offsets (100 times the taste's variance, but between sets) are
    # no direction of it: only noise's share of a random 3 of 63 dimensions.
    assert np.max(np.abs(last.T @ between)) < 0.5
    assert np.array_equal(population_basis(sets, rank=4)["last"], last)  # seeded


def test_only_parts_wider_than_the_threshold_get_a_basis_and_a_shipped_one_wins() -> None:
    chosen = choose_bases(SMALL, LAYOUT)
    assert set(chosen) == {"last", "mean"}
    assert chosen["last"].describe() == {"source": "random", "rank": 8, "seed": 0}
    assert np.array_equal(chosen["last"].matrix, random_basis(D, 8, 0, "last"))
    shipped = {"last": _orthonormal(np.random.default_rng(1), D, 5)}
    chosen = choose_bases(SMALL, LAYOUT, shipped)
    assert chosen["last"].describe() == {"source": "global", "rank": 5}
    assert chosen["last"].matrix is shipped["last"] and chosen["mean"].source == "random"
    other_width = {"last": _orthonormal(np.random.default_rng(1), 16, 5)}  # another model's
    assert choose_bases(SMALL, LAYOUT, other_width)["last"].source == "random"
    assert choose_bases(TasteConfig(), part_layout(576, PARTS)) == {}  # 576-d: whole
    assert choose_bases(TasteConfig(reduce_above=None), part_layout(4096, PARTS)) == {}
    assert set(choose_bases(TasteConfig(), part_layout(4096, PARTS))) == {"last", "mean"}
    with pytest.raises(ConfigError, match="reduce_above"):
        TasteConfig(reduce_above=0)
    with pytest.raises(ConfigError, match="basis_rank"):
        TasteConfig(basis_rank=0)


def test_a_fit_in_a_basis_is_the_whole_fit_of_the_projected_parts_folded_back() -> None:
    """The objective in a basis P is the documented one over the features P^T x: the
    reduced fit equals a whole fit of pre-projected parts, and its head is P a."""
    sets = _sets(40, seed=0)
    config = TasteConfig(reduce_above=24, basis_rank=8, tolerance=1e-9)
    reduced = TasteFit(LAYOUT, config)
    project = {p: reduced.bases[p].matrix for p in ("last", "mean")}  # type: ignore[index]
    assert reduced.width == 8 + 8 + S and reduced.layout == LAYOUT  # the widths given
    whole = TasteFit(part_layout(8, PARTS), TasteConfig(reduce_above=None, tolerance=1e-9))
    _fill(reduced, sets)
    _fill(whole, sets, project)
    np.testing.assert_allclose(reduced.rows.full(), whole.rows.full(), atol=1e-4)
    reduced.fit(200, 1.0)
    whole.fit(200, 1.0)
    np.testing.assert_allclose(reduced.v, whole.v, rtol=1e-4, atol=1e-6)
    head, small = reduced.head(), whole.head()
    assert head.feature_size == D  # raw weights: what the graph multiplies the inputs by
    for part in ("last", "mean"):
        np.testing.assert_allclose(head.weights[part], project[part] @ small.weights[part],
                                   rtol=1e-4, atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(
        head.weights["signals"], small.weights["signals"], rtol=1e-4, atol=1e-6
    )
    last, mean, sig, _ = sets[0]
    np.testing.assert_allclose(
        head.score(last, mean, sig),
        small.score(last @ project["last"], mean @ project["mean"], sig),
        rtol=1e-3, atol=1e-3,
    )  # fmt: skip
    parts = {"last": last, "mean": mean, "signals": sig}  # TasteFit.score reads raw parts too
    np.testing.assert_allclose(reduced.score(parts), head.score(last, mean, sig), rtol=1e-5)


def test_a_studys_wide_block_of_any_name_is_fitted_in_a_basis_and_scored_raw() -> None:
    """The layout is data: an offline study's block wider than reduce_above gets a
    basis like a shipped part, and weights/score stay in raw feature space."""
    rng = np.random.default_rng(4)
    config = TasteConfig(reduce_above=24, basis_rank=8, extra_blocks=("words",))
    fit = TasteFit({"words": 40, "flags": 3}, config)
    assert set(fit.bases) == {"words"} and fit.width == 8 + 3
    direction = rng.standard_normal(40)
    for i in range(30):
        words, flags = rng.standard_normal((6, 40)), rng.standard_normal((6, 3))
        best = int(np.argmax(words @ direction))
        fit.add_set(str(i), {"words": words, "flags": flags})
        fit.set_reactions(str(i), [Reaction("pick", best, None, tuple(set(range(6)) - {best}))])
    fit.fit(40, 1.0)
    weights = fit.weights()
    assert weights["words"].shape == (40,) and weights["flags"].shape == (3,)
    basis = fit.bases["words"].matrix
    np.testing.assert_allclose(basis @ (basis.T @ weights["words"]), weights["words"], atol=1e-5)
    words, flags = rng.standard_normal((6, 40)), rng.standard_normal((6, 3))
    want = words @ weights["words"] + flags @ weights["flags"]
    np.testing.assert_allclose(fit.score({"words": words, "flags": flags}), want, rtol=1e-5)


def test_the_folded_head_is_a_plain_linear_onnx_head_that_scores_as_numpy_does(
    onnx_file: Path,
) -> None:
    global_model = onnx_file.read_bytes()
    fit = TasteFit(LAYOUT, SMALL, has_global=True)
    base = RankingSession(global_model)
    for i in range(12):
        g, liked = generation(i)
        means = np.stack([c.mean_feature for c in g.candidates])  # type: ignore[misc]
        sig = candidate_signals(g.candidates)
        parts = {"last": g.features, "mean": means, "signals": sig}
        fit.add_set(str(i), parts, base.score(g.instruction, g.features))
        fit.set_reactions(str(i), [Reaction("thumb", liked[0], 1.0)])
    cold = compose_ranker(fit.head(), global_model)  # a new user: exactly the global ranker
    g, _ = generation(50)
    np.testing.assert_array_equal(
        RankingSession(cold).score_generation(g), base.score(g.instruction, g.features)
    )
    fit.fit(40, 1.0)
    head = fit.head()
    assert np.any(head.weights["last"]) and head.global_weight != 0
    composed = compose_ranker(head, global_model)
    means = np.stack([c.mean_feature for c in g.candidates])  # type: ignore[misc]
    want = head.score(g.features, means, candidate_signals(g.candidates),
                      base.score(g.instruction, g.features))  # fmt: skip
    np.testing.assert_allclose(RankingSession(composed).score_generation(g), want,
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    # The head's initializers are raw per-part vectors (and 1 + u): no basis in the graph.
    graph = onnx.load_from_string(composed).graph
    added = [t for t in graph.initializer if t.name.startswith("personal_head")]
    assert sorted(tuple(t.dims) for t in added) == sorted([(D,), (D,), (S,), ()])


def test_a_restart_re_derives_the_basis_and_the_saved_head_lies_in_it(tmp_path: Path) -> None:
    me = PersonalRanker(None, tmp_path, "dana", "chat", learner=SMALL)  # type: ignore[arg-type]
    _teach(me, range(10))
    meta = me.registry.current("dana", "chat").metadata
    random_8 = {"source": "random", "rank": 8, "seed": 0}
    assert meta["basis"] == {"last": random_8, "mean": random_8}
    saved = TasteHead.from_bytes(me.registry.load_weights("dana", "chat") or b"")
    basis_module._RANDOM.clear()  # a new process: nothing held
    memory.ROWS.clear()
    again = TasteFit(LAYOUT, SMALL)
    again.start_from(saved)
    for part in ("last", "mean"):  # the re-derived basis holds the saved head exactly
        assert np.linalg.norm(saved.weights[part]) > 0
        np.testing.assert_allclose(again.head().weights[part], saved.weights[part], atol=1e-6)
    elsewhere = TasteFit(LAYOUT, TasteConfig(reduce_above=24, basis_rank=8, basis_seed=1))
    elsewhere.start_from(saved)  # another basis keeps only the head's shadow in it
    assert not np.allclose(elsewhere.head().weights["last"], saved.weights["last"], atol=1e-3)
    g, liked = generation(10)
    me.pick(me.show(g), liked[0])
    report = me.learn()  # the restarted learner continues from the saved head
    assert report.updated and report.started_from == "user" and report.replayed_events == 10


def test_a_global_ranker_ships_its_basis_and_a_new_basis_rebuilds_the_rows(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(2)
    global_head = TasteHead.zeros(D, PARTS)  # type: ignore[arg-type]
    global_model = compose_ranker(global_head)
    registry = Registry(tmp_path / "rankers")
    first = {"last": _orthonormal(rng, D, 5), "mean": _orthonormal(rng, D, 6)}
    registry.save_global("chat", global_model, weights=attach_basis(global_head.to_bytes(), first))
    me = PersonalRanker(None, tmp_path, "erin", "chat", learner=SMALL)  # type: ignore[arg-type]
    _teach(me, range(4))
    meta = me.registry.current("erin", "chat").metadata
    assert meta["basis"] == {"last": {"source": "global", "rank": 5},
                             "mean": {"source": "global", "rank": 6}}  # fmt: skip
    head = TasteHead.from_bytes(me.registry.load_weights("erin", "chat") or b"")
    last = first["last"]
    assert np.linalg.norm(head.weights["last"]) > 0
    np.testing.assert_allclose(last @ (last.T @ head.weights["last"]), head.weights["last"],
                               atol=1e-6)  # fmt: skip
    # The same global model republished with another basis: the rows are rebuilt in it.
    second = {"last": _orthonormal(rng, D, 3)}
    registry.save_global("chat", global_model, weights=attach_basis(global_head.to_bytes(), second))
    g, liked = generation(4)
    me.pick(me.show(g), liked[0])
    assert me.learn().global_version == 2
    meta = me.registry.current("erin", "chat").metadata
    assert meta["basis"]["last"] == {"source": "global", "rank": 3}
    assert meta["basis"]["mean"] == {"source": "random", "rank": 8, "seed": 0}


def test_a_basis_rides_in_a_head_archive_that_still_loads_and_a_bad_one_is_corrupt() -> None:
    head = TasteHead.zeros(D, PARTS)  # type: ignore[arg-type]
    basis = {"last": _orthonormal(np.random.default_rng(0), D, 4)}
    archive = attach_basis(head.to_bytes(), basis)
    assert np.array_equal(shipped_basis(archive)["last"], basis["last"])
    assert TasteHead.from_bytes(archive).parts == head.parts  # readers of the head ignore it
    assert shipped_basis(head.to_bytes()) == {} and shipped_basis(None) == {}
    with pytest.raises(CorruptModelError, match="not orthonormal"):
        attach_basis(head.to_bytes(), {"last": 2 * basis["last"]})
    with pytest.raises(CorruptModelError, match="shape"):
        attach_basis(head.to_bytes(), {"last": np.zeros(D, np.float32)})


def test_a_users_rows_shrink_by_width_over_rank() -> None:
    rng = np.random.default_rng(0)
    layout = part_layout(512, ("last", "mean"))
    fits = [TasteFit(layout, TasteConfig(reduce_above=r, basis_rank=16)) for r in (None, 256)]
    for i in range(40):
        last, mean = rng.standard_normal((2, 8, 512)).astype(np.float32)
        for fit in fits:
            fit.add_set(str(i), {"last": last, "mean": mean})
    whole, reduced = fits
    assert reduced.width == 32 and whole.width == 1024
    assert reduced.rows.nbytes < whole.rows.nbytes / 20
    assert reduced.nbytes < whole.nbytes / 10  # the heads' state included


def test_a_damaged_global_archive_still_ranks_and_the_random_basis_stands_in(
    tmp_path: Path,
) -> None:
    head = TasteHead.zeros(D, PARTS)  # type: ignore[arg-type]
    registry = Registry(tmp_path / "rankers")
    basis = {"last": _orthonormal(np.random.default_rng(0), D, 4)}
    info = registry.save_global("chat", compose_ranker(head),
                                weights=attach_basis(head.to_bytes(), basis))  # fmt: skip
    weights_file = registry.model_path(None, "chat").parent / str(info.weights_file)
    weights_file.write_bytes(b"damaged")
    me = PersonalRanker(None, tmp_path, "finn", "chat", learner=SMALL)  # type: ignore[arg-type]
    g, liked = generation(0)
    me.pick(me.show(g), liked[0])
    report = me.learn()
    assert report.updated and report.global_version == 1 and report.started_from == "global"
    meta = me.registry.current("finn", "chat").metadata
    assert meta["basis"]["last"] == {"source": "random", "rank": 8, "seed": 0}
