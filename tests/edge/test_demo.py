"""The demo's wiring, on the tiny model (the real run is `ranker-edge demo`)."""

from __future__ import annotations

import json
from pathlib import Path

from edge.cli import main
from edge.demo.run import DemoConfig, paired_gain, run_demo
from edge.demo.tasks import first_number, split_problems


def test_problems_are_checkable_and_train_test_disjoint() -> None:
    train, test = split_problems(40, 20, seed=0)
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    problem = train[0]
    assert problem.check(problem.answer) and problem.check(f"The answer is {problem.answer}.")
    assert not problem.check("I do not know")
    assert first_number("1,234 and 5") == 1234


def test_paired_gain_is_the_mean_difference_with_an_interval_around_it() -> None:
    gain = paired_gain([True] * 30 + [False] * 10, [True] * 10 + [False] * 30)
    assert gain["difference"] == 0.5
    low, high = gain["ci95"]
    assert 0.2 < low < 0.5 < high < 0.8
    assert paired_gain([True, False], [True, False])["ci95"] == [0.0, 0.0]


def test_demo_runs_every_phase_against_a_running_central(tiny_server, tmp_path: Path) -> None:
    config = DemoConfig(
        central=f"127.0.0.1:{tiny_server.port}", k=4, train_prompts=4, test_prompts=3,
        learn_every=2, max_new_tokens=4, kind="point", home=tmp_path,
    )  # fmt: skip
    result = run_demo(config, log=lambda _: None)
    assert result.feedback_events == 16
    assert result.ranker_versions == 2 and len(result.learn_seconds) == 2
    assert set(result.methods) >= {"first sample", "learned ranker (onnxruntime)"}
    assert all(acc.total == 3 for acc in result.methods.values())
    assert "feedback stream + learning" in result.phase_seconds
    assert -1.0 <= result.gain_over_first["difference"] <= 1.0


def test_cli_json_output(tiny_server, tmp_path: Path, capsys) -> None:
    code = main([
        "demo", "--central", f"127.0.0.1:{tiny_server.port}", "--k", "2", "--train-prompts", "2",
        "--test-prompts", "2", "--learn-every", "2", "--home", str(tmp_path), "--json",
    ])  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["methods"]["first sample"]["total"] == 2
    assert out["ranker_versions"] == 1
