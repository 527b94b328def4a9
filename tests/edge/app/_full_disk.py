"""Run a Python snippet on a real, tiny, full-able disk: a tmpfs of a few hundred KB.

The filesystem is mounted in a private mount namespace (``unshare -rm``: a user
namespace, so no root is needed where the kernel allows it), which vanishes
with the process; nothing is mocked: the writes hit ENOSPC, and SQLite says
SQLITE_FULL, exactly as on a phone whose storage is full.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def run_on_small_disk(code: str, size_kb: int) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with ``sys.argv[1]`` the mount point of a fresh ``size_kb`` tmpfs."""
    if shutil.which("unshare") is None or sys.platform != "linux":
        pytest.skip("needs Linux's unshare to mount a small tmpfs")
    with tempfile.TemporaryDirectory() as mount:
        script = Path(mount).parent / f"{Path(mount).name}.py"
        script.write_text(code)
        try:
            command = (
                f"mount -t tmpfs -o size={size_kb}k tmpfs {mount} && "
                f"exec {sys.executable} {script} {mount}"
            )
            proc = subprocess.run(
                ["unshare", "-rm", "sh", "-c", command],
                capture_output=True,
                text=True,
                timeout=120,
                env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'protos'}"},
            )
        finally:
            script.unlink()
    if "mount:" in proc.stderr or "unshare:" in proc.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    return proc
