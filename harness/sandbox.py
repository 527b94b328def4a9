"""Running untrusted generated code: a separate, isolated interpreter with limits.

Generated programs can loop forever, eat memory, or touch files, so each runs
in its own `python -I` process in an empty temporary directory, with a
wall-clock timeout, CPU and address-space limits, and no inherited
environment. That is enough isolation for HumanEval-style tests on a
developer machine; it is not a security boundary against a hostile model.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits for one program run."""

    timeout_s: float = 5.0  # wall-clock limit; the process is killed after it
    cpu_s: int = 5  # CPU-seconds limit (RLIMIT_CPU)
    memory_bytes: int = 1 << 30  # address-space limit (RLIMIT_AS)


def _limit(limits: SandboxLimits) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


def run_program(source: str, limits: SandboxLimits | None = None) -> bool:
    """True when `source` runs to completion with exit status 0 inside the limits."""
    limits = limits or SandboxLimits()
    with tempfile.TemporaryDirectory(prefix="ranker-sandbox-") as workdir:
        path = Path(workdir) / "program.py"
        path.write_text(source)
        try:
            done = subprocess.run(
                [sys.executable, "-I", "-S", str(path)],
                cwd=workdir,
                env={"PATH": "/usr/bin:/bin"},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=limits.timeout_s,
                preexec_fn=lambda: _limit(limits),
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False
    return done.returncode == 0
