"""Every option of every command-line tool has help text and shows its default."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from central.cli import _parser as central_parser
from edge.cli import _parser as edge_parser
from ranker_eval.cli import _parser as eval_parser
from ranker_personalize.cli import _parser as personalize_parser

REPO = Path(__file__).resolve().parents[1]


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser itself, or each of its subcommands (theirs too, at any depth)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: dict[str, argparse.ArgumentParser] = {}
            for command in action.choices.values():
                found.update(_commands(command))
            return found
    return {parser.prog: parser}


@pytest.mark.parametrize(
    "parser",
    [central_parser, edge_parser, eval_parser, personalize_parser],
    ids=lambda p: p.__module__,
)
def test_every_option_has_help_and_a_shown_default(parser) -> None:
    for name, command in _commands(parser()).items():
        options = [a for a in command._actions if a.option_strings and a.dest != "help"]
        assert options, name
        missing = [a.dest for a in options if not a.help]
        assert not missing, f"{name}: options without help: {missing}"
        text = " ".join(command.format_help().split())
        assert text.count("(default:") >= len(options), f"{name} hides a default:\n{text}"


@pytest.mark.parametrize("module", ["ranker_eval.cli", "ranker_personalize.cli", "edge.cli"])
def test_help_runs_where_torch_cannot_be_imported(module: str) -> None:
    code = f"import sys; sys.modules['torch'] = None; from {module} import main; main(['--help'])"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60,
        env={**os.environ, "COLUMNS": "100"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "--help" in proc.stdout


@pytest.mark.parametrize(
    ("module", "argv", "what"),
    [
        ("ranker_eval.cli", ["--quick", "--out", "{tmp}"], "ranker-eval"),
        ("ranker_personalize.cli", ["pool", "--prompts", "1"], "ranker-personalize pool"),
        ("ranker_personalize.cli", ["run", "--quick", "--out", "{tmp}"], "ranker-personalize run"),
    ],
)
def test_research_tools_name_the_extra_in_one_line_without_torch(
    module: str, argv: list[str], what: str, tmp_path: Path
) -> None:
    """Issue 24: in a runtime-only install these ended in a raw torch/tqdm traceback."""
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = f"import sys; sys.modules['torch'] = None; from {module} import main; "
    code += f"sys.exit(main({argv!r}))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "protos")])},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"{what.split()[0]}: {what} needs torch, which is not installed: "
        "pip install 'language-ranker[eval]'"
    ]
    assert not list(tmp_path.iterdir())  # nothing written


def test_the_study_never_writes_the_committed_report_by_default() -> None:
    args = personalize_parser().parse_args(["run"])
    assert args.out == Path("ranker-personalize-report")
    assert personalize_parser().parse_args(["report"]).out == args.out
