"""User ids, ranker names and task names: what may name a directory on disk (no imports).

The registry keeps each user's rankers under ``users/<user>/<name>/`` and the
store tags every set with its task, so an id is one path component: no
separators, no traversal, a bounded length. Kept apart from the registry so
that the store can check ids without loading what ranking needs.
"""

from __future__ import annotations

import re

from edge._errors import RegistryError

__all__ = ["validate_id"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$")


def validate_id(value: str, what: str) -> str:
    """Accept ids usable as one path component; reject traversal and separators."""
    if not isinstance(value, str) or not _ID.match(value) or ".." in value:
        raise RegistryError(
            f"invalid {what} {value!r}: use 1-128 characters from letters, digits and "
            "_ . @ + -, starting with a letter or digit, without '..'"
        )
    return value
