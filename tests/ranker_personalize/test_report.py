"""The report's account of the users who do not learn, read from their figures."""

from __future__ import annotations

from typing import Any

from ranker_personalize.report import _slow_learner_lines


def _est(mean: float) -> dict[str, float]:
    return {"mean": mean, "low": mean - 0.05, "high": mean + 0.05}


def _user(judge: str, first: float, at_50: float, ceiling: float, decisive: int) -> dict[str, Any]:
    return {
        "judge": judge,
        "first": _est(first),
        "personal": {"0": _est(first), "50": _est(at_50), "200": _est(at_50 + 0.05)},
        "gain_vs_first": {"50": _est(at_50 - first)},
        "ceiling": _est(ceiling),
        "decisive_prompts": decisive,
        "test_prompts": 100,
    }


def test_only_the_users_below_the_bar_are_listed_each_with_the_reason_its_figures_give() -> None:
    results = {
        "meta": {"summary_budgets": [50, 200]},
        "users": {
            "learns": _user("concise", 0.1, 0.6, 0.9, 100),
            "little_room": _user("prose", 0.7, 0.8, 0.85, 100),
            "low_ceiling": _user("social", 0.2, 0.25, 0.6, 100),
            "rare": _user("outdoors", 0.2, 0.25, 0.75, 40),
        },
    }
    lines = _slow_learner_lines(results)
    assert [line.split("**")[1] for line in lines] == ["little_room", "low_ceiling", "rare"]
    assert "little room" in lines[0]
    assert "separates this taste poorly" in lines[1] and "60" in lines[1]
    assert "holds it" in lines[2] and "only 40%" in lines[2] and "(topic)" in lines[2]


def test_a_gain_whose_interval_reaches_zero_is_below_the_bar() -> None:
    user = _user("concise", 0.1, 0.3, 0.9, 100)
    user["gain_vs_first"]["50"] = {"mean": 0.2, "low": -0.01, "high": 0.4}
    results: dict[str, Any] = {"meta": {"summary_budgets": [50, 200]}, "users": {"noisy": user}}
    assert len(_slow_learner_lines(results)) == 1
    results["users"]["noisy"]["gain_vs_first"]["50"]["low"] = 0.01
    assert _slow_learner_lines(results)[0].startswith("- Every user")


def test_every_judge_has_a_kind_and_description_the_study_s_own_and_the_content_ones() -> None:
    from ranker_personalize.content_users import CONTENT_KINDS, judge_description, judge_kind
    from ranker_personalize.users import KINDS

    for judge in (*KINDS, *CONTENT_KINDS):
        assert judge_kind(judge) and judge_description(judge) != judge
    assert judge_kind("outdoors") == "topic" and judge_kind("social") == "topical"
