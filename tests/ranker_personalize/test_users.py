"""Judges score text in the intended direction; simulated feedback is the demo's."""

from __future__ import annotations

import numpy as np
import pytest

from edge.demo.users import TasteUser
from edge.runtime.signals import SIGNAL_NAMES
from ranker_personalize.users import (
    CONFLICTS,
    JUDGES,
    KINDS,
    MIRRORS,
    SimUser,
    make_users,
)

SHORT = "Drink water."
LONG = "You really should drink lots of water because it's great and you'll feel awesome!"
LISTED = "Try this:\n1. Sleep early\n2. Avoid screens\n- Read a book"
FORMAL = "It is therefore recommended to ensure sufficient rest; however, individuals vary."
CONCRETE = "Walk 30 minutes, for example after lunch, about 5 days a week."
SOCIAL = "Ask a friend or your family to join; a local club makes it easier together."


@pytest.mark.parametrize(
    ("judge", "better", "worse"),
    [
        ("concise", SHORT, LONG),
        ("verbose", LONG, SHORT),
        ("lists", LISTED, LONG),
        ("prose", LONG, LISTED),
        ("formal", FORMAL, LONG),
        ("concrete", CONCRETE, LONG),
        ("no_you", FORMAL, LONG),
        ("short_formal", FORMAL, LONG),
        ("social", SOCIAL, CONCRETE),
    ],
)
def test_judges_prefer_their_taste(judge: str, better: str, worse: str) -> None:
    assert JUDGES[judge](better) > JUDGES[judge](worse)
    assert JUDGES[judge](better) == JUDGES[judge](better)  # deterministic


def test_the_study_has_conflicting_pairs_and_tastes_no_signal_encodes() -> None:
    users = {u.name for u in make_users()}
    assert len(users) >= 8 and set(JUDGES) == set(KINDS) == set(MIRRORS) == users
    texts = [SHORT, LONG, LISTED, FORMAL, CONCRETE, SOCIAL]
    for a, b in CONFLICTS:  # opposite tastes: each one's favourite is the other's least liked
        scores_a, scores_b = SimUser(a, a).scores(texts), SimUser(b, b).scores(texts)
        assert np.array_equal(scores_a, -scores_b)
    unmirrored = [n for n in users if not MIRRORS[n]]
    assert len(unmirrored) >= 2 and {KINDS[n] for n in unmirrored} <= {"lexical", "topical"}
    assert all(s in SIGNAL_NAMES for names in MIRRORS.values() for s in names)


def test_users_differ_on_the_same_candidates() -> None:
    texts = [SHORT, LONG, LISTED, FORMAL, CONCRETE, SOCIAL]
    favourites = {u.name: int(np.argmax(u.scores(texts))) for u in make_users()}
    assert len(set(favourites.values())) >= 5


def test_feedback_is_simulated_exactly_as_the_demo_does() -> None:
    """The study's users react like the demo's TasteUser (same draws, same reactions)."""
    texts = [LONG, SHORT, FORMAL, CONCRETE, LISTED]
    study, demo = SimUser("concise", "concise"), TasteUser("concise", "concise")
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    for order in ([0, 1, 2, 3, 4], [3, 1, 0, 4, 2]) * 20:
        assert study.react(texts, order, a) == demo.react(texts, order, b)


def test_noiseless_pick_is_the_best_shown_and_thumb_is_relative() -> None:
    user = SimUser("concise", "concise", noise=0.0, pick_share=1.0)
    texts = [LONG, SHORT, FORMAL, CONCRETE]
    rng = np.random.default_rng(0)
    for _ in range(20):
        r = user.react(texts, [0, 1, 2, 3], rng)
        shown = [r.candidate, *r.rejected]
        assert r.kind == "pick" and 0 in shown and 2 <= len(shown) <= 3
        assert user.scores(texts)[r.candidate] == max(user.scores(texts)[i] for i in shown)
    thumbs = SimUser("concise", "concise", noise=0.0, pick_share=0.0)
    assert thumbs.react(texts, [1, 0, 2, 3], rng).up is True  # shortest shown: up
    assert thumbs.react(texts, [0, 1, 2, 3], rng).up is False  # longest shown: down
    assert thumbs.prefers(texts) == frozenset({1})


def test_noise_makes_reactions_inconsistent() -> None:
    texts = [LONG, SHORT]
    rng = np.random.default_rng(1)
    noisy = SimUser("concise", "concise", noise=1.0, pick_share=0.0)
    ups = [noisy.react(texts, [0, 1], rng).up for _ in range(400)]
    assert 0.35 < np.mean(ups) < 0.65  # a fully random user says up about half the time
