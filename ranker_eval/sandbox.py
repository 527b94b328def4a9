"""Running untrusted generated code: a bubblewrap sandbox with limits and no survivors.

A HumanEval candidate is code a model wrote, so it is treated as hostile:
each one runs under bubblewrap (`bwrap`, Debian package `bubblewrap`) in
fresh namespaces, and the host sees nothing of it once `run_program` returns.

What the program sees:

- `/usr` (and the `/bin`, `/lib*` links or directories next to it), the
  Python installation and `/etc/ld.so.cache`, all read-only. Nothing else
  of the host: no `/etc/passwd`, no home directories, no project checkout,
  no `/run` sockets, no `/sys`.
- `/tmp`, a private size-capped tmpfs and its working directory: the only
  writable place. It lives in memory and dies with the sandbox.
- A new network namespace (only its own, unconfigured loopback: the host's
  127.0.0.1 services are unreachable), new pid, ipc, uts and cgroup
  namespaces, a new session (no terminal to inject input into), an empty
  environment, and no_new_privs (setuid binaries do not elevate).

Limits: CPU seconds, address space, file size, open files and process count
(setrlimit, set inside the sandbox), a tmpfs size, and a wall-clock timeout.
The program is pid 2 of its own pid namespace; at the timeout the sandbox's
pid 1 is killed, which makes the kernel kill every process in the namespace,
forked or daemonised, before `run_program` returns. A normal exit ends the
namespace the same way, so no child outlives its program either.

Run as root (as on CI machines), bwrap needs no user namespace; a small
bootstrap inside the sandbox sets the limits, then drops to the `nobody`
uid before the program runs, because the kernel never applies the process
limit to uid 0. Run as a normal user, bwrap maps that user into a user
namespace and the bootstrap only sets the limits.

Where bwrap is missing or fails its self-check (no namespaces in a
container, say), generated code is refused with `SandboxUnavailable` unless
the caller opts in to running it unisolated (`allow_unsafe`, the
`--unsafe-exec` flag of `ranker-eval`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

__all__ = [
    "SandboxConfig",
    "SandboxLimits",
    "SandboxUnavailable",
    "isolation_problem",
    "require_isolation",
    "run_program",
]

log = logging.getLogger(__name__)

NOBODY = 65534  # uid and gid the program runs as when the harness runs as root
PROGRAM = "/program.py"  # where the program appears inside the sandbox (read-only)
WORKDIR = "/tmp"  # the private tmpfs: working directory and the only writable place
UNSAFE_FLAG = "--unsafe-exec"  # the ranker-eval flag that allows running unisolated

# Runs inside the sandbox, as its pid 2: limits first, then (when bwrap ran as
# root) the drop to `nobody`, then the program in this same interpreter.
# Limits are set here rather than before bwrap because bwrap itself must fork
# and mount, and because a user namespace counts processes from its creation.
_BOOTSTRAP = """\
import os, resource, sys
names = ("CPU", "AS", "FSIZE", "NPROC", "NOFILE", "CORE")
for name, value in zip(names, map(int, sys.argv[1:7])):
    kind = getattr(resource, "RLIMIT_" + name)
    resource.setrlimit(kind, (value, value))
uid = int(sys.argv[7])
if os.getuid() == 0:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
sys.argv = sys.argv[8:]
with open(sys.argv[0]) as file:
    code = compile(file.read(), sys.argv[0], "exec")
exec(code, {"__name__": "__main__", "__file__": sys.argv[0]})
"""

# What the self-check runs: it must exit 0, and only if the program is not
# root and cannot see the host's /etc.
_SELF_CHECK = (
    "import os, sys\nsys.exit(0 if os.getuid() != 0 and not os.path.exists('/etc/passwd') else 3)\n"
)


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits for one program run (HumanEval bodies need a fraction of each).

    Memory is limited per process, so one run holds at most
    `processes * memory_bytes` plus the `tmp_bytes` of its tmpfs.
    """

    timeout_s: float = 5.0  # wall-clock limit; every process of the sandbox is killed after it
    cpu_s: int = 5  # CPU-seconds limit per process (RLIMIT_CPU)
    memory_bytes: int = 1 << 30  # address-space limit per process (RLIMIT_AS)
    file_bytes: int = 1 << 20  # largest file a process may write (RLIMIT_FSIZE)
    processes: int = 16  # processes and threads of the sandbox's uid (RLIMIT_NPROC)
    open_files: int = 64  # file descriptors per process (RLIMIT_NOFILE)
    tmp_bytes: int = 32 << 20  # size of the private writable tmpfs


@dataclass(frozen=True)
class SandboxConfig:
    """How generated code is run: the limits, the sandbox tool, and the unsafe opt-in."""

    limits: SandboxLimits = field(default_factory=SandboxLimits)  # per program run
    bwrap: str = "bwrap"  # bubblewrap executable: a name looked up on PATH, or a path
    allow_unsafe: bool = False  # run unisolated when bwrap is unusable (trusted code only)


class SandboxUnavailable(RuntimeError):
    """Generated code was refused: it cannot be isolated here and unsafe runs were not allowed."""


def run_program(source: str, config: SandboxConfig | None = None) -> bool:
    """True when `source` runs to completion with exit status 0 inside the sandbox and limits.

    Raises `SandboxUnavailable` when bwrap is unusable, unless `config.allow_unsafe`.
    """
    config = config or SandboxConfig()
    problem = isolation_problem(config.bwrap)
    if problem is None:
        return _run_isolated(source, config) == 0
    if not config.allow_unsafe:
        raise SandboxUnavailable(_refusal(problem))
    _warn_unsafe(problem)
    return _run_unisolated(source, config.limits)


def require_isolation(bwrap: str = "bwrap") -> None:
    """Raises `SandboxUnavailable` now, before any work, when generated code would be refused."""
    problem = isolation_problem(bwrap)
    if problem is not None:
        raise SandboxUnavailable(_refusal(problem))


@functools.cache
def isolation_problem(bwrap: str = "bwrap") -> str | None:
    """Why `bwrap` cannot isolate generated code here (None when it can).

    Checked once per executable: a trivial program must run through the
    same command line as real programs and see itself unprivileged and
    without the host's /etc.
    """
    path = shutil.which(bwrap)
    if path is None:
        return (
            f"bubblewrap ({bwrap!r}) was not found; install it "
            "(Debian/Ubuntu: apt-get install bubblewrap, or run scripts/setup.sh as root)"
        )
    with tempfile.TemporaryFile() as stderr:
        try:
            status = _run_isolated(_SELF_CHECK, SandboxConfig(bwrap=path), stderr)
        except OSError as error:
            return f"bubblewrap at {path} could not be started: {error}"
        stderr.seek(0)
        detail = stderr.read().decode(errors="replace").strip()[-400:]
    if status == 0:
        return None
    outcome = "timed out" if status is None else f"exit status {status}"
    return f"bubblewrap at {path} failed its self-check ({outcome}): {detail or '-'}"


def _refusal(problem: str) -> str:
    return (
        f"refusing to run generated code without isolation: {problem}. "
        f"To run it unisolated anyway (trusted models on a throwaway machine only), pass "
        f"{UNSAFE_FLAG} to ranker-eval, or SandboxConfig(allow_unsafe=True)."
    )


@functools.cache
def _warn_unsafe(problem: str) -> None:
    """Warns once per problem: every later program runs unisolated just the same."""
    log.warning("running generated code WITHOUT isolation (%s given): %s", UNSAFE_FLAG, problem)


# --- the isolated run --------------------------------------------------------------------------


def _run_isolated(
    source: str, config: SandboxConfig, stderr: IO[bytes] | None = None
) -> int | None:
    """The program's exit status under bwrap, None when it ran past the timeout."""
    with tempfile.TemporaryFile() as program, _pipe() as (info_read, info_write):
        program.write(source.encode())
        program.seek(0)
        command = _command(config, program.fileno(), info_write)
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr or subprocess.DEVNULL,
            pass_fds=(program.fileno(), info_write),
            start_new_session=True,
        )
        os.close(info_write)
        with _sandbox_init(info_read) as init:
            try:
                return process.wait(timeout=config.limits.timeout_s)
            except subprocess.TimeoutExpired:
                _kill(process, init)
                return None


@contextlib.contextmanager
def _pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    try:
        yield read, write
    finally:
        for fd in (read, write):
            with contextlib.suppress(OSError):
                os.close(fd)


@contextlib.contextmanager
def _sandbox_init(info_read: int) -> Iterator[int | None]:
    """A pidfd of the sandbox's pid 1, read from bwrap's --info-fd (None if bwrap failed early).

    bwrap writes the JSON and closes the pipe as soon as it has cloned that
    process, so reading to the end does not wait for the program. A pidfd,
    unlike a pid, can never come to name another process.
    """
    data = b""
    while chunk := os.read(info_read, 4096):
        data += chunk
    pidfd = None
    if data:
        with contextlib.suppress(ProcessLookupError):
            pidfd = os.pidfd_open(json.loads(data)["child-pid"])
    try:
        yield pidfd
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _kill(process: subprocess.Popen[bytes], init: int | None) -> None:
    """Kills every process of the sandbox and returns once they are all gone.

    Killing the namespace's pid 1 makes the kernel kill everything else in
    it, and pid 1 only finishes exiting after they have; bwrap, its parent,
    exits once it has reaped pid 1, so waiting for bwrap waits for them all.
    """
    if init is not None:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(init, signal.SIGKILL)
    try:
        process.wait(timeout=5.0)
    except subprocess.TimeoutExpired:  # pid 1 unknown or bwrap stuck: --die-with-parent
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _command(config: SandboxConfig, program_fd: int, info_fd: int) -> list[str]:
    """The bwrap command line: namespaces, environment, mounts, then the bootstrap."""
    limits = config.limits
    interpreter = _interpreter()
    rlimits = (
        limits.cpu_s,
        limits.memory_bytes,
        limits.file_bytes,
        limits.processes,
        limits.open_files,
        0,  # no core dumps
    )
    return [
        config.bwrap,
        # --unshare-all would add a user namespace even as root, where the
        # drop to `nobody` would then fail (that uid is not mapped in it).
        *("--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"),
        *("--unshare-cgroup-try", "--die-with-parent", "--new-session"),
        *("--info-fd", str(info_fd)),
        *_environment(),
        *_host_mounts(interpreter),
        *("--proc", "/proc", "--dev", "/dev"),
        *("--perms", "1777", "--size", str(limits.tmp_bytes), "--tmpfs", WORKDIR),
        *("--perms", "0444", "--ro-bind-data", str(program_fd), PROGRAM),
        # Last: the sandbox's own root and /dev become read-only too.
        *("--remount-ro", "/dev", "--remount-ro", "/", "--chdir", WORKDIR),
        *_capabilities(),
        "--",
        *(str(interpreter), "-I", "-S", "-c", _BOOTSTRAP),
        *map(str, rlimits),
        str(NOBODY),
        PROGRAM,
    ]


def _environment() -> list[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": WORKDIR, "TMPDIR": WORKDIR, "LANG": "C.UTF-8"}
    return ["--clearenv", *(a for k, v in env.items() for a in ("--setenv", k, v))]


def _capabilities() -> list[str]:
    """As root, bwrap keeps every capability; the bootstrap needs only these two to drop uid."""
    if os.geteuid() != 0:
        return []
    return ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]


def _interpreter() -> Path:
    """The real interpreter behind `sys.executable` (a venv's python is a link to it)."""
    return Path(sys.executable).resolve()


def _host_mounts(interpreter: Path) -> list[str]:
    """Read-only binds of the system libraries and the Python installation, nothing else."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):  # merged /usr: recreate the link
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for tree in _python_trees(interpreter):
        args += [*_parents(tree), "--ro-bind", str(tree), str(tree)]
    cache = Path("/etc/ld.so.cache")  # where the dynamic linker finds libraries
    if cache.exists():
        args += [*_parents(cache), "--ro-bind", str(cache), str(cache)]
    return args


def _python_trees(interpreter: Path) -> list[Path]:
    """The interpreter and its standard library, where /usr does not already hold them."""
    candidates = {
        interpreter,
        Path(sys.base_prefix).resolve(),
        Path(sys.base_exec_prefix).resolve(),
    }
    trees: list[Path] = []
    for tree in sorted(candidates - {Path("/")}):  # a directory sorts before what it holds
        if not any(tree.is_relative_to(kept) for kept in (Path("/usr"), *trees)):
            trees.append(tree)
    return trees


def _parents(tree: Path) -> list[str]:
    """World-traversable parents for a bind (bwrap would make them 0700, closed to `nobody`)."""
    args: list[str] = []
    for parent in reversed(tree.parents[:-1]):  # outermost first, without "/"
        args += ["--perms", "0755", "--dir", str(parent)]
    return args


# --- the unsafe fallback -----------------------------------------------------------------------


def _run_unisolated(source: str, limits: SandboxLimits) -> bool:
    """Only limits, a temporary directory and a killed process group: no isolation at all."""
    with tempfile.TemporaryDirectory(prefix="ranker-unsafe-") as workdir:
        path = Path(workdir) / "program.py"
        path.write_text(source)
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", str(path)],
            cwd=workdir,
            env={"PATH": "/usr/bin:/bin"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=lambda: _set_limits(limits),
            start_new_session=True,
        )
        try:
            return process.wait(timeout=limits.timeout_s) == 0
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return False


def _set_limits(limits: SandboxLimits) -> None:
    for kind, value in (
        (resource.RLIMIT_CPU, limits.cpu_s),
        (resource.RLIMIT_AS, limits.memory_bytes),
        (resource.RLIMIT_FSIZE, limits.file_bytes),
        (resource.RLIMIT_NOFILE, limits.open_files),
    ):
        resource.setrlimit(kind, (value, value))
