"""The numpy pairwise fit: preferences from feedback, exact gradients, warm updates converge."""

from __future__ import annotations

import numpy as np
import pytest

from edge import ConfigError, FeatureError, TrainingError
from edge.app.taste import Pairs, Reaction, TasteConfig, TasteFit, compose_ranker, preference_pairs
from edge.runtime.parts import part_layout
from edge.runtime.scoring import RankingSession
from edge.runtime.signals import SIGNAL_NAMES

S = len(SIGNAL_NAMES)
ONE_HEAD = ({},)  # head_priors of a fit with the balanced head alone: v is its optimum


def _pairs(p: Pairs) -> set[tuple[int, int, float]]:
    return {(int(w), int(lo), round(float(x), 6)) for w, lo, x in zip(*p, strict=True)}


def test_each_kind_of_feedback_states_preferences_within_its_set() -> None:
    pick = [Reaction("pick", 2, None, (0, 3))]
    assert _pairs(preference_pairs(pick, 4, 1.0)) == {(2, 0, 1.0), (2, 3, 1.0)}
    scores = [Reaction("score", 0, 1.0), Reaction("score", 1, 5.0), Reaction("score", 2, 3.0)]
    assert _pairs(preference_pairs(scores, 3, 1.0)) == {(1, 0, 1.0), (1, 2, 1.0), (2, 0, 1.0)}
    both = [Reaction("thumb", 0, 1.0), Reaction("thumb", 1, 0.0), Reaction("thumb", 2, 0.0)]
    assert _pairs(preference_pairs(both, 4, 1.0)) == {(0, 1, 1.0), (0, 2, 1.0)}
    # A lone thumb is compared with the unrated answers, at implicit_weight in total.
    up = [Reaction("thumb", 1, 1.0)]
    assert _pairs(preference_pairs(up, 5, 2.0)) == {(1, j, 0.5) for j in (0, 2, 3, 4)}
    down = [Reaction("thumb", 1, 0.0)]
    assert _pairs(preference_pairs(down, 3, 1.0)) == {(0, 1, 0.5), (2, 1, 0.5)}
    # The latest thumb on a candidate wins; no preference, no pairs.
    changed = [Reaction("thumb", 0, 0.0), Reaction("thumb", 0, 1.0), Reaction("thumb", 1, 0.0)]
    assert _pairs(preference_pairs(changed, 2, 1.0)) == {(0, 1, 1.0)}
    assert len(preference_pairs([Reaction("score", 0, 1.0)], 1, 1.0).weights) == 0


def _planted(sets: int, d: int, seed: int) -> tuple[np.ndarray, ...]:
    """Sets of 6 candidates whose utility is one direction of the mean vectors plus one
    signal; the last-token vectors carry a large shared offset and noise only."""
    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(7).standard_normal(d)
    direction /= np.linalg.norm(direction)
    last = rng.standard_normal((sets, 6, d)) + 30.0 * rng.standard_normal((sets, 1, d))
    mean = rng.standard_normal((sets, 6, d))
    sig = rng.standard_normal((sets, 6, S))
    utility = 2.0 * mean @ direction + 1.5 * sig[..., 4]
    return last.astype(np.float32), mean.astype(np.float32), sig.astype(np.float32), utility


def _parts(data: tuple[np.ndarray, ...], i: int) -> dict[str, np.ndarray]:
    return {"last": data[0][i], "mean": data[1][i], "signals": data[2][i]}


def _fill(fit: TasteFit, data: tuple[np.ndarray, ...], start: int, stop: int) -> None:
    last, mean, sig, utility = data
    for i in range(start, stop):
        fit.add_set(str(i), {"last": last[i], "mean": mean[i], "signals": sig[i]})
        worst = tuple(int(j) for j in np.argsort(utility[i])[:3])
        fit.set_reactions(str(i), [Reaction("pick", int(np.argmax(utility[i])), None, worst)])


def _objective_and_gradient(
    fit: TasteFit, v: np.ndarray, head: int = 0
) -> tuple[float, np.ndarray]:
    """The documented objective of one head (its prior in ``s``) and its gradient,
    written out independently."""
    pairs, s = fit.pairs(), fit.scale(fit.heads[head])
    x = fit.rows.full().astype(np.float64)
    g = fit.rows.offsets  # the global offsets (0 without a global ranker)
    margins = x[pairs.winners] @ v - x[pairs.losers] @ v + g[pairs.winners] - g[pairs.losers]
    value = (pairs.weights * np.logaddexp(0, -margins)).sum() + 0.5 * fit.config.l2 * (
        (v / s) ** 2
    ).sum()
    coef = -pairs.weights / (1 + np.exp(margins))
    grad = (x[pairs.winners] - x[pairs.losers]).T @ coef + fit.config.l2 * v / s**2
    return float(value), grad


def test_the_fit_reaches_the_optimum_of_the_documented_objective() -> None:
    data = _planted(40, 24, seed=0)
    config = TasteConfig(tolerance=1e-9, head_priors=ONE_HEAD)
    fit = TasteFit(part_layout(24, ("last", "mean", "signals")), config)
    _fill(fit, data, 0, 40)
    start, _ = _objective_and_gradient(fit, fit.v.copy())
    report = fit.fit(200)
    value, grad = _objective_and_gradient(fit, fit.v)
    assert value < start
    assert np.linalg.norm(fit.scale() * grad) < 1e-6 * start
    np.testing.assert_allclose(report.loss * fit.pairs().weights.sum(), value, rtol=1e-6)
    # A small move in any direction cannot lower the objective.
    rng = np.random.default_rng(1)
    for _ in range(5):
        nudge = 1e-4 * rng.standard_normal(fit.width) * fit.scale()
        assert _objective_and_gradient(fit, fit.v + nudge)[0] >= value - 1e-9


def test_one_update_per_event_tracks_the_full_refit() -> None:
    data = _planted(120, 64, seed=2)
    # Noiseless picks of a dense 64-d taste: the weak pull (the shipped l2 of 10 is
    # for noisy reactions, and underfits 120 clean ones: 43 % top-1 below).
    warm = TasteFit(part_layout(64, ("last", "mean", "signals")), TasteConfig(passes=1, l2=1.0))
    for i in range(120):
        _fill(warm, data, i, i + 1)
        warm.fit()
    cold_config = TasteConfig(tolerance=1e-9, l2=1.0)
    cold = TasteFit(part_layout(64, ("last", "mean", "signals")), cold_config)
    _fill(cold, data, 0, 120)
    cold.fit(300)
    # The default heads: signals x100 (first), then the mean-vector head (last x0.01).
    gap = warm.objective(warm.heads[1]) - cold.objective(cold.heads[1])
    assert 0 <= gap < 1e-3 * cold.objective(cold.heads[1])
    # The signals-heavy head's steps move the signals first: it lags further, by
    # design (see the module docstring), but it tracks.
    heavy = warm.objective(warm.heads[0])
    best = cold.objective(cold.heads[0])
    assert 0 <= heavy - best < 0.1 * best
    # One balanced head alone tracks within 0.1% too.
    blocks = ("last", "mean", "signals")
    one = TasteFit(part_layout(64, blocks), TasteConfig(passes=1, head_priors=ONE_HEAD))
    exact = TasteFit(part_layout(64, blocks), TasteConfig(tolerance=1e-9, head_priors=ONE_HEAD))
    for i in range(120):
        _fill(one, data, i, i + 1)
        one.fit()
    _fill(exact, data, 0, 120)
    exact.fit(300)
    gap = one.objective() - exact.objective()
    assert 0 <= gap < 1e-3 * exact.objective()
    test = _planted(300, 64, seed=3)
    scores = warm.head().score(test[0], test[1], test[2])
    assert (scores.argmax(1) == test[3].argmax(1)).mean() > 0.6  # chance: 1/6


def test_a_warm_iteration_reads_part_of_the_history_and_still_reaches_the_optimum() -> None:
    """The kept gradient is recomputed for the stalest quarter of the sets per
    iteration; iterating on fixed data still ends at the exact optimum, and stopping
    is decided on the exact gradient."""
    data = _planted(40, 24, seed=0)
    config = TasteConfig(tolerance=1e-9, refresh=0.25, refresh_block=1, head_priors=ONE_HEAD)
    partial = TasteFit(part_layout(24, ("last", "mean", "signals")), config)
    _fill(partial, data, 0, 40)
    first = partial.fit(1)
    assert first.refreshed == pytest.approx(10 / 40)  # 10 of 40 sets of equal size
    reports = [partial.fit(1) for _ in range(400)]
    exact = TasteFit(part_layout(24, ("last", "mean", "signals")), config)
    _fill(exact, data, 0, 40)
    exact.fit(200, refresh=1.0)
    best, _ = _objective_and_gradient(exact, exact.v)
    value, grad = _objective_and_gradient(partial, partial.v)
    assert value == pytest.approx(best, rel=1e-6)
    assert np.linalg.norm(partial.scale() * grad) < 1e-5 * best
    # Every iteration read about a quarter, plus the whole history when the estimate
    # said "converged" and the exact gradient was checked.
    assert all(0.25 <= r.refreshed <= 1.25 + 1e-9 for r in reports)
    kept = partial.heads[0].g_ref
    np.testing.assert_allclose(kept, _objective_and_gradient(partial, partial.v)[1]
                               - partial.config.l2 * partial.v / partial.scale() ** 2,
                               rtol=1e-4, atol=1e-6)  # fmt: skip


def test_every_head_reaches_its_own_optimum_and_their_mix_is_one_onnx_head() -> None:
    """The default fit keeps three heads over the same rows (signals-heavy, mean-vector,
    the mean-vector one at a tenth of the pull);
    each converges to the optimum of the objective with its own prior, and the
    ranking head is their convex mix, which onnxruntime scores like numpy does."""
    data = _planted(40, 24, seed=5)
    fit = TasteFit(part_layout(24, ("last", "mean", "signals")), TasteConfig(tolerance=1e-9))
    assert fit.num_heads == 3
    # Without signals the signals-heavy head is the balanced one; a head that
    # scales the only block is another l2, not another weighting: dropped.
    assert TasteFit(part_layout(24, ("last", "mean")), TasteConfig()).num_heads == 3
    assert TasteFit(part_layout(24, ("last",)), TasteConfig()).num_heads == 1
    assert (
        TasteFit(
            part_layout(24, ("last", "mean")), TasteConfig(head_priors=({}, {"signals": 9.0}))
        ).num_heads
        == 1
    )
    _fill(fit, data, 0, 40)
    fit.fit(300, refresh=1.0)
    for i, head in enumerate(fit.heads):
        start, _ = _objective_and_gradient(fit, np.zeros(fit.width), i)
        value, grad = _objective_and_gradient(fit, head.v, i)
        # float32 rows: the signals-heavy head (10x wider in s) stops nearer 1e-5
        assert value < start and np.linalg.norm(fit.scale(head) * grad) < 1e-5 * start
    assert not np.allclose(fit.heads[0].v, fit.heads[1].v)  # the priors differ
    share = fit.mix()
    assert share.sum() == pytest.approx(1.0) and (share > 0).all()
    np.testing.assert_allclose(fit.v, share @ np.stack([h.v for h in fit.heads]))
    test = _planted(50, 24, seed=6)
    parts = [h.v for h in fit.heads]
    expected = sum(
        a * (test[0] @ v[:24] + test[1] @ v[24:48] + test[2] @ v[48:])
        for a, v in zip(share, parts, strict=True)
    )
    head = fit.head()
    np.testing.assert_allclose(head.score(test[0], test[1], test[2]), expected, rtol=1e-4,
                               atol=1e-4)  # fmt: skip
    session = RankingSession(compose_ranker(head))
    onnx_scores = session.score_batch(
        np.zeros((50, 24), np.float32), test[0], mean_candidates=test[1], signals=test[2]
    )
    np.testing.assert_allclose(onnx_scores, expected, rtol=1e-4, atol=1e-4)


def test_each_set_is_scored_by_every_head_before_it_is_learned() -> None:
    """Prequential evidence: a new set's pairs are charged at the heads' weights as
    they were before any fit saw the set."""
    data = _planted(3, 24, seed=7)
    fit = TasteFit(part_layout(24, ("last", "mean", "signals")), TasteConfig())
    _fill(fit, data, 0, 1)  # a pick over 3: 3 pairs, scored at v = 0
    assert fit.evidence == pytest.approx((3 * np.log(2),) * fit.num_heads)
    fit.fit(20)
    before = [h.evidence for h in fit.heads]
    _fill(fit, data, 1, 2)
    pairs = fit.pairs(["1"])
    decay = fit.config.evidence_decay  # older evidence counts less as sets arrive
    for head, old in zip(fit.heads, before, strict=True):
        margins = head.h[pairs.winners] - head.h[pairs.losers]
        charged = (pairs.weights * np.logaddexp(0, -margins)).sum()
        assert head.evidence == pytest.approx(decay * old + charged)
    # A second reaction to a set already scored adds no evidence (it is not new).
    evidence = fit.evidence
    fit.set_reactions("1", [Reaction("thumb", 0, 1.0)])
    assert fit.evidence == evidence
    # A restart restores the mix from the recorded evidence, else starts it even.
    again = TasteFit(part_layout(24, ("last", "mean", "signals")), TasteConfig())
    _fill(again, data, 0, 1)
    again.start_from(fit.head(), evidence=fit.evidence)
    np.testing.assert_allclose(again.mix(), fit.mix())
    again.start_from(fit.head())
    np.testing.assert_allclose(again.mix(), np.full(again.num_heads, 1 / again.num_heads))
    np.testing.assert_allclose(again.v, fit.head().weights["last"].tolist() + list(
        fit.head().weights["mean"]) + list(fit.head().weights["signals"]), rtol=1e-6)  # fmt: skip


@pytest.mark.parametrize(
    ("priors", "winner"),
    [
        (({}, {"signals": 100.0}), 1),  # the taste is one signal among 2,048 noise dims
        (({"last": 100.0}, {"mean": 100.0}), 1),  # the taste is in the mean vectors
    ],
)
def test_prequential_evidence_picks_the_head_whose_prior_fits_the_taste(
    priors: tuple[dict[str, float], ...], winner: int
) -> None:
    rng = np.random.default_rng(8)
    d, sets = 256, 60
    direction = rng.standard_normal(d) / np.sqrt(d)
    config = TasteConfig(head_priors=priors)
    fit = TasteFit(part_layout(d, ("last", "mean", "signals")), config)
    test = []
    for i in range(sets + 200):
        last = rng.standard_normal((6, d)).astype(np.float32)
        mean = rng.standard_normal((6, d)).astype(np.float32)
        sig = rng.standard_normal((6, S)).astype(np.float32)
        utility = sig[:, 0] if winner == 1 and priors[1] == {"signals": 100.0} else mean @ direction
        if i >= sets:
            test.append((last, mean, sig, utility))
            continue
        best = int(np.argmax(utility))
        fit.add_set(str(i), {"last": last, "mean": mean, "signals": sig})
        fit.set_reactions(str(i), [Reaction("pick", best, None, tuple(set(range(6)) - {best}))])
        fit.fit(40 if i == 0 else 1)
    assert fit.mix()[winner] > 0.9, fit.evidence
    last, mean, sig, utility = (np.stack(x) for x in zip(*test, strict=True))
    truth = utility.argmax(1)
    mixed = (fit.head().score(last, mean, sig).argmax(1) == truth).mean()
    alone = []
    for head in fit.heads:
        v = head.v
        scores = last @ v[:d] + mean @ v[d : 2 * d] + sig @ v[2 * d :]
        alone.append((scores.argmax(1) == truth).mean())
    assert alone[winner] > alone[1 - winner] and mixed >= alone[1 - winner]


def test_a_taste_in_one_signal_is_not_drowned_by_wide_vectors() -> None:
    rng = np.random.default_rng(4)
    d, sets = 2048, 30
    fit = TasteFit(part_layout(d, ("last", "signals")), TasteConfig())
    for i in range(sets):
        sig = rng.standard_normal((6, S)).astype(np.float32)
        best = int(np.argmax(sig[:, 0]))
        last = rng.standard_normal((6, d)).astype(np.float32)
        fit.add_set(str(i), {"last": last, "signals": sig})
        fit.set_reactions(str(i), [Reaction("pick", best, None, tuple(set(range(6)) - {best}))])
    fit.fit(50)
    head = fit.head()
    test_sig = rng.standard_normal((200, 6, S)).astype(np.float32)
    test_vec = rng.standard_normal((200, 6, d)).astype(np.float32)
    picked = head.score(test_vec, None, test_sig).argmax(1)
    assert (picked == test_sig[..., 0].argmax(1)).mean() > 0.65  # chance: 1/6 (0.70 at S=23)
    assert np.argmax(np.abs(head.weights["signals"])) == 0
    # 2,048 noise dimensions could fit 150 pairs perfectly; scaled as one block they
    # stay a small term next to the one informative signal.
    assert (test_sig @ head.weights["signals"]).std() > 5 * (test_vec @ head.weights["last"]).std()


def test_at_zero_weights_the_head_adds_nothing_and_the_global_offset_is_respected() -> None:
    fit = TasteFit(part_layout(8, ("last",)), TasteConfig())
    rows = np.eye(8, dtype=np.float32)[:3]
    fit.add_set("a", {"last": rows}, global_scores=np.array([5.0, 0.0, 0.0]))
    assert fit.head().score(rows).tolist() == [0.0, 0.0, 0.0]
    # The user agrees with the global ranker: nothing to learn, the weights stay ~0.
    fit.set_reactions("a", [Reaction("pick", 0, None, (1, 2))])
    fit.fit(20)
    assert np.abs(fit.v).max() < 0.05
    # The user disagrees: the head must overcome the global offset of 5 (at the
    # shipped pull, l2 = 10, that takes a few hundred such picks).
    fit.set_reactions("a", [Reaction("pick", 1, None, (0, 2))] * 300)
    fit.fit(50)
    total = fit.head().score(rows) + np.array([5.0, 0.0, 0.0])
    assert int(np.argmax(total)) == 1


def _against_the_global(sets: int, d: int, seed: int) -> tuple[np.ndarray, ...]:
    """Sets of 6 whose global score is a direction of the last-token vectors (plus
    noise the vectors do not carry); the user picks the global ranker's last."""
    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(11).standard_normal(d) / np.sqrt(d)
    last = rng.standard_normal((sets, 6, d))
    mean = rng.standard_normal((sets, 6, d))
    sig = rng.standard_normal((sets, 6, S))
    g = 3.0 * last @ direction + 0.5 * rng.standard_normal((sets, 6))
    return last.astype(np.float32), mean.astype(np.float32), sig.astype(np.float32), g


def _reverse_taste_top1(events: int, global_weight: bool) -> tuple[float, float]:
    """Held-out top-1 on the reversed taste after ``events`` picks, and u."""
    train, test = _against_the_global(events, 256, 0), _against_the_global(300, 256, 1)
    layout = part_layout(256, ("last", "mean", "signals"))
    fit = TasteFit(layout, TasteConfig(global_weight=global_weight), has_global=True)
    for i in range(events):
        fit.add_set(str(i), _parts(train, i), global_scores=train[3][i])
        best = int(np.argmin(train[3][i]))
        fit.set_reactions(str(i), [Reaction("pick", best, None, tuple(set(range(6)) - {best}))])
        fit.fit()
    head = fit.head()
    scores = head.score(test[0], test[1], test[2], global_scores=test[3])
    return float((scores.argmax(1) == test[3].argmin(1)).mean()), head.global_weight


def test_u_turns_the_global_ranker_down_for_a_user_of_the_opposite_taste() -> None:
    """A user whose taste is the reverse of the global ranker's: with u the head
    reverses it within five events; with u fixed at 0 the wide blocks must unlearn
    it direction by direction and stay far behind."""
    for events in (5, 10):
        with_u, u = _reverse_taste_top1(events, global_weight=True)
        without_u, u0 = _reverse_taste_top1(events, global_weight=False)
        assert u < -1 and u0 == 0.0  # the global score turned upside down
        assert with_u > 0.6 and with_u > without_u + 0.3, (events, with_u, without_u)


def test_a_fit_with_u_reaches_the_optimum_and_starts_at_the_global_ranker() -> None:
    data = _against_the_global(30, 24, 2)
    # The weak pull, so that the optimum is far below the start (what is checked)
    config = TasteConfig(tolerance=1e-9, head_priors=ONE_HEAD, l2=1.0)
    fit = TasteFit(part_layout(24, ("last", "mean", "signals")), config, has_global=True)
    assert fit.width == 2 * 24 + S + 1
    for i in range(30):
        fit.add_set(str(i), _parts(data, i), global_scores=data[3][i])
        worst = tuple(int(j) for j in np.argsort(-data[3][i])[:3])
        fit.set_reactions(str(i), [Reaction("pick", int(np.argmin(data[3][i])), None, worst)])
    assert fit.global_weight == 0.0 and fit.head().global_weight == 0.0  # the cold start
    start, _ = _objective_and_gradient(fit, fit.v.copy())
    fit.fit(300, refresh=1.0)
    value, grad = _objective_and_gradient(fit, fit.v)
    assert value < 0.1 * start  # the reversed taste is easy once the global is reversed
    assert np.linalg.norm(fit.scale() * grad) < 1e-6 * start
    assert fit.head().global_weight == fit.v[-1] < 0
    # The global column is standardised by the global score's within-set spread.
    spread = np.concatenate([x - x.mean() for x in data[3]])
    assert fit.scale()[-1] == pytest.approx(1 / np.sqrt((spread**2).sum() / (30 * 5)))
    # A fit warm-started from the head continues from its u.
    again = TasteFit(part_layout(24, ("last", "mean", "signals")), TasteConfig(), has_global=True)
    again.add_set("0", _parts(data, 0), global_scores=data[3][0])
    again.start_from(fit.head())
    assert again.global_weight == pytest.approx(fit.v[-1])
    # No global ranker: no column, u stays 0 and the fit is as before.
    plain = TasteFit(part_layout(24, ("last", "mean", "signals")), TasteConfig(), has_global=False)
    assert plain.width == 2 * 24 + S and plain.head().global_weight == 0.0


def test_bad_input_is_refused() -> None:
    fit = TasteFit(part_layout(8, ("last", "mean")), TasteConfig())
    with pytest.raises(FeatureError, match="needs the 'last' part"):  # a head to compose
        TasteFit(part_layout(8, ("mean",)), TasteConfig()).head()
    with pytest.raises(FeatureError, match="'last' part is required"):
        fit.add_set("b", {"mean": np.zeros((3, 8), np.float32)})
    with pytest.raises(FeatureError, match=r"parts \['signals'\] are not in the fit"):
        fit.add_set("b", {"last": np.zeros((3, 8)), "signals": np.zeros((3, S))})
    with pytest.raises(ValueError, match="unknown parts"):
        part_layout(8, ("last", "lastt"))
    with pytest.raises(ConfigError, match="a head prior maps"):
        TasteConfig(head_priors=({"words": 2.0},))
    assert TasteConfig(head_priors=({"words": 2.0},), extra_blocks=("words",)).extra_blocks
    with pytest.raises(ConfigError, match="l2 must be positive"):
        TasteConfig(l2=0)
    with pytest.raises(ConfigError, match="refresh_block must be at least 1"):
        TasteConfig(refresh_block=0)
    fit.add_set("a", {"last": np.zeros((3, 8), np.float32)})
    with pytest.raises(TrainingError, match="already in the fit"):
        fit.add_set("a", {"last": np.zeros((3, 8), np.float32)})
    with pytest.raises(TrainingError, match="out of range"):
        fit.set_reactions("a", [Reaction("thumb", 3, 1.0)])
    assert fit.fit().passes == 0  # no pairs yet: nothing to do
