"""The content study's pieces: its judges, the block-generic fit, the fast replay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.app.taste import Reaction, TasteConfig, TasteFit
from edge.runtime.parts import part_layout
from ranker_personalize.blockfit import block_config, replay
from ranker_personalize.content_study import Bank, Candidate, compare, decisive_counts
from ranker_personalize.content_users import (
    CONTENT_DESCRIPTIONS,
    CONTENT_JUDGES,
    CONTENT_KINDS,
    DEV,
    HELD_OUT,
    make_content_users,
)
from ranker_personalize.pool import Pool
from ranker_personalize.simulate import (
    SimConfig,
    pool_lexicon,
    pool_signals,
    run_user,
    taste_config,
)
from ranker_personalize.users import make_users
from ranker_personalize.words import content_block

from .conftest import fake_pool


@pytest.mark.parametrize(
    ("judge", "better", "worse"),
    [
        ("outdoors", "Take a walk in the park and enjoy the fresh air.", "Open the file."),
        ("hedging", "It may help, and it often does.", "It helps. It works."),
        ("warm", "Don't worry, be patient, and enjoy it.", "Do the task."),
        ("specific", "Run 5 km in 30 minutes with Anna.", "Run a bit with someone."),
        ("reader", "You can do it your way.", "One can do it one's way."),
        ("money", "Set a budget so you spend less money.", "Set a goal."),
        ("health", "Sleep and exercise keep your body healthy.", "Read a novel."),
        ("cautious", "Be careful to avoid this mistake.", "Go ahead."),
        ("upbeat", "It is fun and rewarding, you will love it.", "It is a task."),
        ("timely", "Every morning, first stretch for ten minutes.", "Stretch."),
        ("reasons", "Rest, because it helps you recover.", "Rest and recover."),
        ("plain", "Rest well and recover.", "Just rest, really, it's very good stuff."),
    ],
)
def test_content_judges_prefer_their_taste(judge: str, better: str, worse: str) -> None:
    assert CONTENT_JUDGES[judge](better) > CONTENT_JUDGES[judge](worse)


def test_content_judges_are_split_in_two_halves_of_several_kinds() -> None:
    assert set(DEV) | set(HELD_OUT) == set(CONTENT_JUDGES) == set(CONTENT_KINDS)
    assert set(CONTENT_DESCRIPTIONS) == set(CONTENT_JUDGES)
    assert not set(DEV) & set(HELD_OUT) and len(DEV) == len(HELD_OUT) == 6
    assert len(set(CONTENT_KINDS.values())) >= 6
    assert not set(CONTENT_JUDGES) & {u.name for u in make_users()}  # no name clashes
    user = make_content_users(["money"])[0]
    assert user.prefers(["Buy it cheap.", "Save money on a budget.", "Go."]) == {1}


def test_decisive_counts_count_prompts_where_the_judge_does_not_tie(pool: Pool) -> None:
    counts = decisive_counts(make_content_users(["reader", "money"]), pool)
    # the fake pool's texts say "you" in one of five texts, and nothing about money
    assert counts["money"] == 0
    assert 0 < counts["reader"] <= len(pool)


def _blocks(pool: Pool) -> dict[str, np.ndarray]:
    """The parts the shipped learner fits, as the store computes them."""
    return {
        "last": pool.candidates,
        "mean": pool.means,
        "signals": pool_signals(pool),
        "lexicon": pool_lexicon(pool),
    }


def test_the_fit_scores_as_its_head_and_any_layout_order_gives_the_same_fit(pool: Pool) -> None:
    """The layout is data: the registry's parts in another stacking order fit the same
    heads and mix, and ``TasteFit.score`` is what the head (the composed graph) scores."""
    config = TasteConfig()
    blocks = _blocks(pool)
    shipped = TasteFit(part_layout(pool.candidates.shape[2], blocks), config)
    reordered = TasteFit(
        {n: blocks[n].shape[2] for n in ("last", "lexicon", "signals", "mean")}, config
    )
    for i in range(12):
        reaction = [Reaction("pick", i % 4, None, tuple(j for j in range(4) if j != i % 4))]
        for fit in (shipped, reordered):
            fit.add_set(str(i), {n: b[i] for n, b in blocks.items()})
            fit.set_reactions(str(i), reaction)
            fit.fit(40 if i == 0 else 1)
    for name, w in shipped.weights().items():
        np.testing.assert_allclose(reordered.weights()[name], w, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(reordered.mix(), shipped.mix(), rtol=1e-4)
    head = shipped.head()
    np.testing.assert_allclose(
        shipped.score(blocks),
        head.score(pool.candidates, pool.means, blocks["signals"], lexicon=blocks["lexicon"]),
        rtol=1e-5,
    )


def test_the_fit_takes_a_new_block_with_its_own_prior(pool: Pool) -> None:
    """A content block learns a taste the vectors do not show: a word."""
    content = np.stack([content_block(t) for t in pool.texts])
    blocks = {"last": pool.candidates, "content": content}
    config = block_config(TasteConfig(), head_priors=({"content": 100.0},))
    assert config.extra_blocks == ("content",)
    fit = TasteFit({n: b.shape[2] for n, b in blocks.items()}, config)
    judge = CONTENT_JUDGES["reader"]
    for i in range(len(pool)):
        scores = np.array([judge(t) for t in pool.texts[i]])
        if scores.max() == scores.min():
            continue
        best = int(np.argmax(scores))
        fit.add_set(str(i), {n: b[i] for n, b in blocks.items()})
        fit.set_reactions(str(i), [Reaction("pick", best, None, tuple(
            j for j in range(4) if scores[j] < scores[best]))])  # fmt: skip
        fit.fit(20)
    assert fit.weights()["content"].any()
    with pytest.raises(Exception, match="head_priors"):
        block_config(TasteConfig(), head_priors=())


def test_replay_picks_what_the_real_loop_picks(pool: Pool, tmp_path: Path) -> None:
    """The fast replay and the store -> learner -> ONNX -> registry loop agree pick for pick."""
    train, test = pool.subset(range(30)), pool.subset(range(30, 40))
    sim = SimConfig(budgets=(0, 3, 8))
    user = make_users()[0]
    real = run_user(user, train, test, tmp_path, 0, sim)
    fast = replay(
        user, _blocks(train), train.texts, _blocks(test), 0, taste_config(sim), sim.budgets
    )
    for budget in sim.budgets:
        np.testing.assert_array_equal(fast.picks[budget], real.picks[budget])


def test_compare_reports_curves_ceilings_and_gains() -> None:
    pool = fake_pool(prompts=40, seed=1)
    train, test = pool.subset(range(28)), pool.subset(range(28, 40))
    bank = Bank(train, test, {"words": lambda p: np.stack([content_block(t) for t in p.texts])})
    users = [make_users()[0], *make_content_users(["reader"])]
    out = compare(
        bank, [Candidate("v2+words", ("last", "mean", "signals", "words"))], users,
        seeds=(0,), budgets=(0, 5, 50),
    )  # fmt: skip
    section = out["v2+words"]
    assert set(section["users"]) == {"concise", "reader"}
    reader = section["users"]["reader"]
    assert reader["curve"][0]["mean"] == reader["first"]["mean"]  # 0 events: the first sample
    assert reader["ceiling"] is not None and 0 <= reader["ceiling"]["mean"] <= 1
    assert section["summary"]["content"]["worst_gain_at_50"]["user"] == "reader"


def test_replay_with_a_global_ranker_picks_what_the_real_cold_start_picks(
    pool: Pool, tmp_path: Path
) -> None:
    """A global ranker fitted on two users' events, published, then a third user's
    session: the replay given the global's scores agrees with the real loop, and
    the pooled fit is the real pooled ranker."""
    from edge.runtime.scoring import Ranker
    from ranker_personalize.blockfit import pooled
    from ranker_personalize.globalrank import collect_events, train_global

    train, test = pool.subset(range(30)), pool.subset(range(30, 40))
    sim = SimConfig(budgets=(0, 4, 8))
    users = make_users()[:3]
    config = taste_config(sim)
    homes, replays = [], []
    for seed, user in enumerate(users[:2]):
        run_user(user, train, test, tmp_path / user.name, seed, sim)
        homes.append((tmp_path / user.name, user.name))
        replays.append(replay(user, _blocks(train), train.texts, _blocks(test), seed, config, (8,)))
    real_global = train_global(collect_events(homes, 8, sim.ranker_name), tmp_path / "g", sim)
    fast_global = pooled([r.events for r in replays], _blocks(train), config)
    ranker = Ranker(real_global.model)

    def global_scores(p: Pool) -> np.ndarray:
        return ranker.score_batch(
            p.instructions, p.candidates, mean_candidates=p.means, signals=pool_signals(p),
            lexicon=pool_lexicon(p),
        )  # fmt: skip

    np.testing.assert_allclose(fast_global.score(_blocks(test)), global_scores(test), atol=1e-4)
    real_global.publish(tmp_path / "new", sim.ranker_name)
    real_global.close()
    real = run_user(users[2], train, test, tmp_path / "new", 5, sim)
    prior = (global_scores(train), global_scores(test))
    # PersonalRanker's default cold start: the first sample until the first update,
    # the global as the head's offset from then on
    fast = replay(users[2], _blocks(train), train.texts, _blocks(test), 5, config, sim.budgets,
                  prior=prior, first_sample_until_update=True)  # fmt: skip
    assert not real.picks[0].any()  # the first sample at 0 events
    for budget in sim.budgets:
        np.testing.assert_array_equal(fast.picks[budget], real.picks[budget])
    ranked = replay(
        users[2], _blocks(train), train.texts, _blocks(test), 5, config, sim.budgets, prior=prior
    )
    np.testing.assert_array_equal(ranked.picks[0], global_scores(test).argmax(1))


def _fake_bank() -> Bank:
    pool = fake_pool(prompts=40, seed=2)
    train, test = pool.subset(range(28)), pool.subset(range(28, 40))
    return Bank(train, test, {"words": lambda p: np.stack([content_block(t) for t in p.texts])})


def test_cold_start_compares_three_ways_of_starting() -> None:
    from ranker_personalize.content_report import COLD_BUDGETS, cold_start

    bank = _fake_bank()
    users = [*make_users()[:2], *make_content_users(["reader"])]
    out = cold_start(bank, Candidate("v2", ("last", "mean", "signals")), users, (0,), events=6)
    assert set(out) == {"concise", "verbose", "reader"}
    for section in out.values():
        assert set(section) >= {"first", "from_scratch", "from_global", "first_then_global"}
        assert set(section["from_global"]) == set(COLD_BUDGETS)
        # without a global at 0 events, and with one held back: the first sample
        for way in ("from_scratch", "first_then_global"):
            assert section[way][0]["mean"] == section["first"]["mean"]
            assert section[way + "_gain_at_0"]["mean"] == 0


def test_diagnose_measures_the_four_bounds() -> None:
    from ranker_personalize.content_diagnose import BestOfK, diagnose

    bank = _fake_bank()
    user = BestOfK("reader", "reader", 0.0)
    texts = ["You and your plan.", "A plan.", "Your own plan."]  # 50, 0 and 33 per 100 words
    reaction = user.react(texts, [0, 1, 2], np.random.default_rng(0))
    assert (reaction.kind, reaction.candidate, reaction.rejected) == ("pick", 0, (1, 2))
    v2 = Candidate("v2", ("last", "mean", "signals"))
    out = diagnose(bank, Candidate("v2+words", (*v2.blocks, "words")), v2, ["reader"], (0,),
                   sets=(5,), widths=(64,))  # fmt: skip
    assert set(out["judge_feature"]["reader"]) == {10, 50, 200}
    assert set(out["ceiling_by_sets"]["reader"]) == {"v2", "v2+words"}
    assert 0 <= out["oracle_words"]["reader"][64] <= 100
