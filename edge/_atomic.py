"""Crash-safe file replacement: write a temp file, fsync, rename over the target.

Package infrastructure, like ``_errors`` and ``_lazy``: any room may use it, and
it imports nothing of the package but ``_errors``. The registry saves versions
with it and the exporters write ONNX files with it.

A phone can lose power at any instant. Writing into a temp file in the *same*
directory and then ``os.replace``-ing it means a reader sees either the old file
or the complete new one, never a torn mix; fsyncing the file before and the
directory after the rename makes that hold across power loss, not only crashes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edge._errors import DiskFullError

__all__ = ["atomic_write", "file_lock", "is_disk_full"]

_FULL = {errno.ENOSPC, errno.EDQUOT}  # no space left; over a disk quota


def is_disk_full(error: OSError) -> bool:
    """Whether ``error`` says the device (or the user's quota) is full."""
    return error.errno in _FULL


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically; on any failure the old file stays.

    A full disk raises DiskFullError naming ``path`` (the temp file is removed)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        if is_disk_full(error):
            raise DiskFullError(path, error.strerror or str(error)) from error
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(error, OSError) and is_disk_full(error):
            raise DiskFullError(path, error.strerror or str(error)) from error
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock between processes (no-op where fcntl is missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: single-process use only
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
