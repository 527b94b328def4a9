"""The build backend: setuptools, building in a temporary directory, not the source tree.

pip builds a local project in place, and setuptools then leaves ``build/`` and
``language_ranker.egg-info/`` in the clone (pypa/setuptools#3236); a stale
``build/lib`` can even ship a module deleted since. Each hook here runs
setuptools' own with an extra distutils config (``DIST_EXTRA_CONFIG``) that
points ``build_base`` and ``egg_base`` at a temporary directory, removed after
the hook. Named in pyproject.toml (``backend-path = ["scripts"]``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from setuptools import build_meta as _setuptools


@contextlib.contextmanager
def _outside_the_tree() -> Iterator[None]:
    with tempfile.TemporaryDirectory(prefix="language-ranker-build-") as tmp:
        config = os.path.join(tmp, "setup.cfg")
        with open(config, "w") as f:
            f.write(f"[build]\nbuild_base = {tmp}/build\n[egg_info]\negg_base = {tmp}\n")
        before = os.environ.get("DIST_EXTRA_CONFIG")
        os.environ["DIST_EXTRA_CONFIG"] = config
        try:
            yield
        finally:
            if before is None:
                del os.environ["DIST_EXTRA_CONFIG"]
            else:
                os.environ["DIST_EXTRA_CONFIG"] = before


def _outside(hook: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(hook)
    def run(*args: Any, **kwargs: Any) -> Any:
        with _outside_the_tree():
            return hook(*args, **kwargs)

    return run


# PEP 517 and PEP 660: every hook setuptools provides, each run outside the tree.
get_requires_for_build_wheel = _outside(_setuptools.get_requires_for_build_wheel)
get_requires_for_build_sdist = _outside(_setuptools.get_requires_for_build_sdist)
get_requires_for_build_editable = _outside(_setuptools.get_requires_for_build_editable)
prepare_metadata_for_build_wheel = _outside(_setuptools.prepare_metadata_for_build_wheel)
prepare_metadata_for_build_editable = _outside(_setuptools.prepare_metadata_for_build_editable)
build_wheel = _outside(_setuptools.build_wheel)
build_sdist = _outside(_setuptools.build_sdist)
build_editable = _outside(_setuptools.build_editable)
