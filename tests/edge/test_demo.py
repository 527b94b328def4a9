"""The demo's wiring on the tiny model (the real run is `ranker-edge demo`), and its
measures on hand-made answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.app.personal import STORE_FILE
from edge.app.store import FeedbackStore
from edge.cli import main
from edge.demo.common import paired_gain
from edge.demo.config import DemoConfig
from edge.demo.correctness import FREE_BASELINES, free_picks, self_consistency_pick
from edge.demo.run import run_demo
from edge.demo.tasks import (
    ASSISTANT_PROMPTS,
    LENGTH_HINT,
    first_number,
    split_assistant_prompts,
    split_problems,
)
from edge.demo.users import (
    JUDGES,
    TasteUser,
    agreement,
    expected_random_agreement,
    hedge_rate,
    preferred,
    word_count,
)
from edge.runtime.client import CentralClient
from edge.runtime.types import Candidate, Generation

SHORT, MEDIUM, LONG = "Yes.", "It turns code into a program.", "A compiler reads source code " * 4


def test_problems_are_checkable_and_train_test_disjoint() -> None:
    train, test = split_problems(40, 20, seed=0)
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    problem = train[0]
    assert problem.check(problem.answer) and problem.check(f"The answer is {problem.answer}.")
    assert not problem.check("I do not know")
    assert first_number("1,234 and 5") == 1234


def test_assistant_prompts_are_distinct_and_split_disjoint() -> None:
    assert len(set(ASSISTANT_PROMPTS)) == len(ASSISTANT_PROMPTS) >= 60
    train, test = split_assistant_prompts(40, 30, seed=0)
    assert len(train) == 40 and len(test) == 30 and not set(train) & set(test)
    assert split_assistant_prompts(40, 30, seed=0) == (train, test)
    assert all(p.endswith(LENGTH_HINT) for p in train + test)
    with pytest.raises(ValueError, match="at most"):
        split_assistant_prompts(len(ASSISTANT_PROMPTS), 1, seed=0)


def test_paired_gain_is_the_mean_difference_with_an_interval_around_it() -> None:
    gain = paired_gain([True] * 30 + [False] * 10, [True] * 10 + [False] * 30)
    assert gain["difference"] == 0.5
    low, high = gain["ci95"]
    assert 0.2 < low < 0.5 < high < 0.8
    assert paired_gain([True, False], [True, False])["ci95"] == [0.0, 0.0]


def test_the_two_judges_have_opposite_tastes() -> None:
    assert word_count("Don't panic: 42 towels.") == 4
    texts = [MEDIUM, LONG, SHORT]
    assert preferred(texts, JUDGES["concise"]) == {2}
    assert preferred(texts, JUDGES["detailed"]) == {1}
    assert preferred(["One two.", "Three four.", "Five six seven."], JUDGES["concise"]) == {0, 1}


def test_the_content_judge_prefers_answers_that_hedge() -> None:
    assert hedge_rate("It may rain; perhaps not.") == pytest.approx(2 / 5)
    assert hedge_rate("") == 0.0
    texts = ["It will rain.", "It might rain, usually in May.", "Rain may come."]
    assert preferred(texts, JUDGES["hedged"]) == {1}  # 3 hedges in 6 words ("May" too)
    assert preferred(["Sure.", "Yes."], JUDGES["hedged"]) == {0, 1}  # no hedge: a tie


def test_taste_agreement_counts_a_pick_among_the_preferred_answers() -> None:
    sets = [[MEDIUM, LONG, SHORT], ["One two.", "Three four.", "Five six seven."]]
    concise = JUDGES["concise"]
    assert agreement([2, 1], sets, concise) == [True, True]  # a tie: either counts
    assert agreement([0, 2], sets, concise) == [False, False]
    assert agreement([1, 2], sets, JUDGES["detailed"]) == [True, True]
    # A random pick agrees with probability |preferred| / K: (1/3 + 2/3) / 2.
    assert expected_random_agreement(sets, concise) == pytest.approx(0.5)


def test_a_consistent_user_reacts_by_their_taste() -> None:
    texts, order = [MEDIUM, LONG, SHORT, "Two words."], [1, 0, 2, 3]
    rng = np.random.default_rng(0)
    concise = TasteUser("c", "concise", noise=0.0, pick_share=0.0)
    thumb = concise.react(texts, order, rng)  # a thumb on the answer shown first
    assert (thumb.kind, thumb.candidate, thumb.up) == ("thumb", 1, False)
    detailed = TasteUser("d", "detailed", noise=0.0, pick_share=0.0)
    assert detailed.react(texts, order, rng).up
    picker = TasteUser("c", "concise", noise=0.0, pick_share=1.0)
    for _ in range(20):
        pick = picker.react(texts, order, rng)
        shown = {pick.candidate, *pick.rejected}
        assert pick.kind == "pick" and 1 in shown and 2 <= len(shown) <= 3
        assert all(word_count(texts[pick.candidate]) <= word_count(texts[i]) for i in shown)


def _generation(texts: list[str], logprobs: list[float], tokens: list[int]) -> Generation:
    candidates = tuple(
        Candidate(i, t, tuple(range(n)), "eos", lp, np.zeros(2, np.float32))
        for i, (t, lp, n) in enumerate(zip(texts, logprobs, tokens, strict=True))
    )
    return Generation("p", np.zeros(2, np.float32), candidates)


def test_free_baselines_pick_what_they_promise() -> None:
    assert self_consistency_pick(["47", "74", "The answer: 74.", "hm"]) == 1  # 74 twice
    assert self_consistency_pick(["no", "It is 47.", "74", "74 is larger", "47"]) == 1  # a tie
    assert self_consistency_pick(["none", "no idea"]) == 0
    generation = _generation(["", "74", "47 or 74", "74."], [0.0, -2.0, -9.0, -2.5], [0, 1, 6, 2])
    picks = free_picks(generation)
    assert picks["first sample"] == 0 and "greedy decoding" not in picks
    assert picks["highest cumulative log-prob"] == 0  # the empty answer's sum is 0
    assert picks["highest mean log-prob"] == 3  # -1.25 per token; the empty one never wins
    assert picks["self-consistency (majority vote)"] == 1
    with_greedy = free_picks(generation, greedy_first=True)  # candidate 0 is greedy's
    assert with_greedy["greedy decoding"] == 0 and with_greedy["first sample"] == 1


def _check_unit_interval(
    figures: dict, tastes: tuple[str, ...] = ("own_taste", "other_taste")
) -> None:
    for taste in tastes:
        for method in figures[taste].values():
            assert 0.0 <= method["accuracy"] <= 1.0
            assert method["ci95"][0] <= method["accuracy"] <= method["ci95"][1]


@pytest.mark.slow  # several seconds; CI runs it
def test_demo_runs_both_parts_against_a_running_central(tiny_server, tmp_path: Path) -> None:
    config = DemoConfig(
        central=f"127.0.0.1:{tiny_server.port}", k=4, train_prompts=4, test_prompts=3,
        learn_every=2, max_new_tokens=4, home=tmp_path, taste_prompts=3,
        taste_test_prompts=4, taste_events=5, taste_learn_every=2, taste_max_new_tokens=6,
    )  # fmt: skip
    result = run_demo(config, log=lambda _: None)

    right = result.correctness
    assert right is not None and right.learner == "taste"
    assert right.feedback_events == 16
    assert right.ranker_versions == 2 and len(right.learn_seconds) == 2
    assert set(right.methods) >= {"first sample", "greedy decoding", "learned ranker (onnxruntime)"}
    assert all(acc.total == 3 for acc in right.methods.values())
    assert -1.0 <= right.gain_over_first["difference"] <= 1.0
    assert right.gain_over_best_free["baseline"] in right.methods
    assert set(right.gain_over_each_free) == set(FREE_BASELINES)  # greedy decoding included

    taste = result.personalization
    assert taste is not None and (taste.train_prompts, taste.test_prompts) == (3, 4)
    assert [u.user for u in taste.users] == ["concise", "detailed"]
    assert [u.other for u in taste.users] == ["detailed", "concise"]
    assert all(u.events == 5 and u.ranker_versions == 3 for u in taste.users)  # 2, 4, 5
    assert 0.0 <= taste.picks_differ <= 1.0
    out = result.as_json()["personalization"]
    for figures in out["users"]:
        _check_unit_interval(figures)
        assert figures["own_taste"]["first_sample"]["total"] == 4
        assert set(figures["own_taste"]) == {
            "first_sample", "random_pick", "personal_ranker", "other_users_ranker",
        }  # fmt: skip
    content = out["content"]  # the user with a content taste, learned beside them
    assert content["user"] == "hedged" and content["events"] == 5
    assert taste.content.ranker_versions == 3
    assert set(content["taste"]) == {"first_sample", "random_pick", "personal_ranker"}
    _check_unit_interval(content, ("taste",))
    assert content["taste"]["first_sample"]["total"] == 4
    assert "correctness: feedback stream + learning" in result.phase_seconds
    assert "personalization: feedback + learning" in result.phase_seconds

    # The demo asks central for what the personal head reads: mean vectors and entropy,
    # and for the greedy answer as candidate 0.
    with FeedbackStore(tmp_path / STORE_FILE) as store:
        for user in ("demo-user", "concise", "detailed", "hedged"):
            shown = store.events(user)[0].shown
            assert shown.mean_candidates is not None and shown.mean_candidates.shape == (4, 64)
            entropies = shown.scalars.mean_entropies
            assert entropies is not None and None not in entropies
    prompt = split_problems(4, 3, config.seed)[0][0].prompt
    with CentralClient(f"127.0.0.1:{tiny_server.port}") as central:
        greedy = central.generate(prompt, 1, temperature=0.0, max_new_tokens=4)
    with FeedbackStore(tmp_path / STORE_FILE) as store:
        first_shown = store.events("demo-user")[0].shown
    assert first_shown.texts[0] == greedy.texts[0]


@pytest.mark.slow  # several seconds; CI runs it
def test_demo_trains_a_torch_point_ranker_when_asked(tiny_server, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    config = DemoConfig(
        central=f"127.0.0.1:{tiny_server.port}", k=4, train_prompts=4, test_prompts=3,
        learn_every=2, max_new_tokens=4, kind="point", home=tmp_path, parts=("correctness",),
    )  # fmt: skip
    result = run_demo(config, log=lambda _: None)
    assert result.personalization is None and result.correctness is not None
    assert result.correctness.feedback_events == 16
    assert result.correctness.ranker_versions == 2 and len(result.correctness.learn_seconds) == 2
    assert all(acc.total == 3 for acc in result.correctness.methods.values())


@pytest.mark.slow  # several seconds; CI runs it
def test_cli_json_output(tiny_server, tmp_path: Path, capsys) -> None:
    code = main([
        "demo", "--central", f"127.0.0.1:{tiny_server.port}", "--k", "2", "--train-prompts", "2",
        "--test-prompts", "2", "--learn-every", "2", "--home", str(tmp_path), "--json",
        "--taste-prompts", "2", "--taste-test-prompts", "3", "--taste-events", "3",
        "--taste-max-new-tokens", "4",
    ])  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["correctness"]["methods"]["first sample"]["total"] == 2
    assert out["correctness"]["ranker_versions"] == 1
    assert out["correctness"]["gain_over_best_free"]["baseline"]
    users = out["personalization"]["users"]
    assert [u["user"] for u in users] == ["concise", "detailed"]
    for figures in users:
        _check_unit_interval(figures)
        assert figures["ranker_versions"] == 3
    assert out["total_seconds"] >= max(out["phase_seconds"].values()) > 0


@pytest.mark.slow  # several seconds; CI runs it
def test_cli_prints_both_tables(tiny_server, tmp_path: Path, capsys) -> None:
    code = main([
        "demo", "--central", f"127.0.0.1:{tiny_server.port}", "--k", "2", "--train-prompts", "2",
        "--test-prompts", "2", "--learn-every", "2", "--home", str(tmp_path),
        "--taste-prompts", "2", "--taste-test-prompts", "2", "--taste-events", "2",
        "--taste-max-new-tokens", "4",
    ])  # fmt: skip
    assert code == 0
    table = capsys.readouterr().out
    assert "highest mean log-prob" in table and "(best free)" in table
    assert "concise's ranker" in table and "detailed's ranker" in table
    assert "pick different answers" in table


def test_cli_refuses_sizes_the_demo_cannot_run(capsys) -> None:
    # Checked before central starts: no server is needed to see the error.
    assert main(["demo", "--taste-prompts", "70", "--taste-test-prompts", "30"]) == 2
    assert "--taste-prompts + --taste-test-prompts must be at most 80" in capsys.readouterr().err
    assert main(["demo", "--k", "1"]) == 2
    assert "--k must be at least 2" in capsys.readouterr().err


def test_demo_and_generate_take_central_credentials(tmp_path: Path, capsys) -> None:
    from edge.cli import _demo_config, _parser

    token = tmp_path / "token"
    token.write_text("s3cret\n")
    args = _parser().parse_args(
        ["demo", "--central", "host:1", "--token-file", str(token), "--tls-ca", "ca.pem"]
    )
    config = _demo_config(args)
    assert (config.token, config.root_certificates) == ("s3cret", "ca.pem")
    blank = tmp_path / "blank"
    blank.write_text("  \n")
    assert main(["generate", "hi", "--token-file", str(blank), "--home", str(tmp_path)]) == 2
    assert "is empty" in capsys.readouterr().err


def test_the_demo_asks_for_the_greedy_answer_unless_told_not_to() -> None:
    from edge.cli import _demo_config, _parser

    assert _demo_config(_parser().parse_args(["demo"])).greedy_first
    assert not _demo_config(_parser().parse_args(["demo", "--no-greedy-first"])).greedy_first
