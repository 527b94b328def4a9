"""Judges score text in the intended direction; simulated feedback has the app's shape."""

from __future__ import annotations

import numpy as np
import pytest

from ranker_personalize.users import JUDGES, SimUser, make_users

SHORT = "Drink water."
LONG = "You really should drink lots of water because it's great and you'll feel awesome!"
LISTED = "Try this:\n1. Sleep early\n2. Avoid screens\n- Read a book"
FORMAL = "It is therefore recommended to ensure sufficient rest; however, individuals vary."
CONCRETE = "Walk 30 minutes, for example after lunch, about 5 days a week."


@pytest.mark.parametrize(
    ("judge", "better", "worse"),
    [
        ("concise", SHORT, LONG),
        ("lists", LISTED, LONG),
        ("formal", FORMAL, LONG),
        ("concrete", CONCRETE, LONG),
        ("no_you", FORMAL, LONG),
        ("short_formal", FORMAL, LONG),
    ],
)
def test_judges_prefer_their_taste(judge: str, better: str, worse: str) -> None:
    assert JUDGES[judge](better) > JUDGES[judge](worse)
    assert JUDGES[judge](better) == JUDGES[judge](better)  # deterministic


def test_users_differ_on_the_same_candidates() -> None:
    texts = [SHORT, LONG, LISTED, FORMAL, CONCRETE]
    favourites = {u.name: int(np.argmax(u.scores(texts))) for u in make_users()}
    assert len(set(favourites.values())) >= 4


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


def test_noise_makes_reactions_inconsistent() -> None:
    texts = [LONG, SHORT]
    rng = np.random.default_rng(1)
    noisy = SimUser("concise", "concise", noise=1.0, pick_share=0.0)
    ups = [noisy.react(texts, [0, 1], rng).up for _ in range(400)]
    assert 0.35 < np.mean(ups) < 0.65  # a fully random user says up about half the time
