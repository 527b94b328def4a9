"""`ranker-edge` as a shell user runs it: generate -> feedback -> learn -> versions ->
rollback against a real central (the tiny model), with torch blocked in the commands
themselves, as in a runtime-only install."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import main

REPO = Path(__file__).resolve().parents[2]
# Each command runs as `ranker-edge` would, in a fresh interpreter that cannot import torch.
_RUN = "import sys; sys.modules['torch'] = None; from edge.cli import main; sys.exit(main())"


def _shell(home: Path, central: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [*args, "--home", str(home), "--user", "ann", "--name", "math"]
    if central is not None:
        argv += ["--central", central, "--k", "4", "--max-new-tokens", "8"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "protos")])}
    code = _RUN.replace("main()", f"main({argv!r})")
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _set_id(out: str) -> str:
    match = re.search(r"^set ([0-9a-f]{8}) for ann/math", out, re.MULTILINE)
    assert match, out
    return match.group(1)


def test_the_shell_loop_runs_without_torch(tiny_server, tmp_path: Path) -> None:
    central = f"127.0.0.1:{tiny_server.port}"
    first = _ok(_shell(tmp_path, central, "generate", "Which number is larger, 47 or 74?"))
    assert "no ranker of its own yet" in first and "[3]" in first
    old_set = _set_id(first)
    assert "event 1: up on [2]" in _ok(_shell(tmp_path, None, "feedback", "up", "2"))
    assert "event 2: down on [0]" in _ok(_shell(tmp_path, None, "feedback", "down", "0"))
    learned = _ok(_shell(tmp_path, None, "learn"))
    assert learned.startswith("v1: 2 new events"), learned

    second = _ok(_shell(tmp_path, central, "generate", "Which number is larger, 12 or 21?"))
    assert "ranked by v1" in second
    new_set = _set_id(second)
    _ok(_shell(tmp_path, None, "feedback", "pick", "1", "--over", "0", "3"))  # the latest set
    _ok(_shell(tmp_path, None, "feedback", "score", "2", "4.5", "--set", old_set[:5]))
    assert _ok(_shell(tmp_path, None, "learn")).startswith("v2: 2 new events (2 replayed)")
    listed = _ok(_shell(tmp_path, None, "sets"))
    assert listed.index(new_set) < listed.index(old_set)  # newest first, with texts
    assert listed.count("  [0] ") == 2

    versions = _ok(_shell(tmp_path, None, "versions"))
    assert re.search(r"^\* v2 .* learned up to event 4 \(2 new\)  taste_head$", versions, re.M)
    assert re.search(r"^  v1 .* learned up to event 2", versions, re.M)

    rolled = _ok(_shell(tmp_path, None, "rollback"))
    assert "current version is now v1" in rolled and "events 3-4 will not be learned" in rolled
    assert "nothing to learn" in _ok(_shell(tmp_path, None, "learn"))
    _ok(_shell(tmp_path, None, "feedback", "up", "0", "--set", new_set))  # event 5
    again = _ok(_shell(tmp_path, None, "learn"))
    assert again.startswith("v3: 1 new events (2 replayed)"), again  # 3-4 stay forgotten
    assert "forgets events 3-4" in _ok(_shell(tmp_path, None, "versions"))

    # A damaged current version is reported by every command that meets it.
    (tmp_path / "rankers/users/ann/math/v000003.onnx").write_bytes(b"damaged")
    versions = _ok(_shell(tmp_path, None, "versions"))
    assert re.search(r"^! v3 .* \(current\) CORRUPT: .*checksum mismatch", versions, re.M)
    shown = _shell(tmp_path, central, "generate", "Which number is larger, 5 or 50?")
    assert "ranked by v2" in _ok(shown)
    assert "warning: ranker 'math' of 'ann': version 3 is corrupt" in shown.stderr
    relearn = _shell(tmp_path, None, "learn")
    assert "warning: the current version is corrupt" in relearn.stderr


def test_feedback_names_what_is_wrong_in_one_line(tiny_server, tmp_path: Path, capsys) -> None:
    home = ["--home", str(tmp_path), "--user", "bo"]
    assert main(["feedback", "up", "0", *home]) == 2
    assert "no set was shown to bo/chat yet: ranker-edge generate PROMPT" in capsys.readouterr().err
    central = ["--central", f"127.0.0.1:{tiny_server.port}", "--k", "3", "--max-new-tokens", "4"]
    assert main(["generate", "hi", *central, *home]) == 0
    capsys.readouterr()
    assert main(["feedback", "up", "7", *home]) == 2
    assert "candidate index 7 is out of range" in capsys.readouterr().err
    assert main(["feedback", "up", "0", "--set", "zzzz", *home]) == 2
    assert "no set 'zzzz' was shown to bo/chat: `ranker-edge sets`" in capsys.readouterr().err
    assert main(["learn", "--user", "nobody", "--home", str(tmp_path)]) == 0
    assert "nothing to learn" in capsys.readouterr().out
    assert main(["rollback", *home]) == 2
    assert "no ranker named 'chat'" in capsys.readouterr().err


@pytest.mark.parametrize("learner", ["list", "point"])
def test_learn_with_a_torch_learner_names_the_extra_without_torch(
    tmp_path: Path, learner: str
) -> None:
    proc = _shell(tmp_path, None, "learn", "--learner", learner)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert "pip install 'language-ranker[train]'" in proc.stderr


def test_a_bad_k_is_refused_by_the_parser_in_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "hi", "--k", "-1"])
    assert exit_.value.code == 2
    assert "argument --k: must be at least 1, got -1" in capsys.readouterr().err
