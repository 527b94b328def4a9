"""What a ranker's line of versions has learned: its cursor, and what a rollback forgot.

Each saved version records in its metadata ``cursor`` (``CURSOR_KEY``), the
newest feedback event it learned, and ``forgotten`` (``FORGOTTEN_KEY``), the
event ranges its line does not learn. A version's *line* is the chain of
versions it was learned on top of.

Rolling back from version C to T *forgets* the events C's line learned that
T's did not: ids after T's cursor up to as far as C's line had reached (its
cursor, or the end of a range it had itself forgotten). The next update
continues from T with the feedback recorded since, and never learns the
rolled-back events again, neither as new events nor as history: a rollback
means "not this", and learning the same feedback again would bring it back.
The registry keeps the ranges a rollback adds per target version
(``Registry.forgotten``), and a learner records them in every version it saves
on top of T, so the line keeps them. The rule is the same whichever way
``rollback(to=...)`` moves. Feedback recorded after the last update is never
forgotten: no version had learned it.

Ranges are ``(after, up_to)`` pairs meaning ids ``after < id <= up_to``, kept
sorted, disjoint and merged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.app.records import FeedbackEvent

__all__ = [
    "CURSOR_KEY",
    "FORGOTTEN_KEY",
    "EventRanges",
    "cursor_of",
    "forgotten_on_leaving",
    "learnable",
    "merged",
    "ranges_of",
]

CURSOR_KEY = "cursor"  # version metadata: the newest feedback event id the version learned
FORGOTTEN_KEY = "forgotten"  # version metadata: event ranges its line does not learn

EventRanges = tuple[tuple[int, int], ...]


def merged(ranges: Iterable[tuple[int, int]]) -> EventRanges:
    """The ranges sorted, empty ones dropped, overlapping and touching ones joined."""
    out: list[tuple[int, int]] = []
    for after, up_to in sorted(r for r in ranges if r[1] > r[0]):
        if out and after <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], up_to))
        else:
            out.append((after, up_to))
    return tuple(out)


def ranges_of(value: object) -> EventRanges:
    """Ranges as JSON holds them (``[[after, up_to], ...]``); anything malformed is none."""
    if not isinstance(value, list):
        return ()
    return merged(
        (r[0], r[1])
        for r in value
        if isinstance(r, list) and len(r) == 2 and all(type(x) is int for x in r)
    )


def cursor_of(metadata: Mapping[str, Any]) -> int:
    """The newest event a version learned (0: none recorded)."""
    cursor = metadata.get(CURSOR_KEY, 0)
    return cursor if type(cursor) is int else 0


def forgotten_on_leaving(
    target: Mapping[str, Any],
    target_forgotten: EventRanges,
    left: Mapping[str, Any],
    left_forgotten: EventRanges,
) -> EventRanges:
    """What the target's line forgets once the version ``left`` is left for it.

    ``target`` and ``left`` are the two versions' metadata; ``*_forgotten`` the
    ranges each line already forgets. The result adds to the target's ranges
    every event after its cursor that ``left``'s line had reached.
    """
    reached = max([cursor_of(left), *(up_to for _, up_to in left_forgotten)])
    return merged([*target_forgotten, (cursor_of(target), reached)])


def learnable(events: Sequence[FeedbackEvent], forgotten: EventRanges) -> list[FeedbackEvent]:
    """The events outside every forgotten range."""
    return [e for e in events if not any(a < e.event_id <= b for a, b in forgotten)]
