"""Feedback events as training data: groups for thumbs and scores, pairs for picks (numpy).

What the torch learner (``edge.training.learner``) and offline trainers read
from a feedback store: ``events_to_dataset`` turns events into a
``GroupDataset`` of the parts of each candidate asked for (the last-token
vectors always; the mean vectors and the signals on request).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Literal

import numpy as np

from edge.app.dataset import Group, GroupDataset, Pair
from edge.app.records import FeedbackEvent, ShownSet
from edge.runtime.parts import Part

__all__ = ["events_to_dataset"]

_LAST_ONLY: tuple[Part, ...] = ("last",)  # events_to_dataset's default parts


def events_to_dataset(
    events: Iterable[FeedbackEvent],
    *,
    unlabelled: Literal["ignore", "negative"] = "ignore",
    parts: Collection[Part] = _LAST_ONLY,
) -> GroupDataset:
    """Turn feedback events into training data for ``edge.training.loop``.

    Per shown set (the latest event wins for a candidate rated twice):
    - thumbs -> one binary group of the thumbed candidates (label 1 up, 0 down);
      with ``unlabelled="negative"`` every other shown candidate joins as a 0;
    - scores -> one graded group of the scored candidates (MSE);
    - picks  -> one preference pair per rejected candidate (Bradley-Terry).
    Duplicate events (the same event id twice, e.g. new + replayed) count once.

    ``parts`` adds the candidates' mean vectors ("mean", for the sets that have
    them) and signals ("signals", of the current SIGNALS_VERSION, recomputed for
    sets stored under another) to the last-token vectors every example carries.
    """
    by_set: dict[tuple[str, str], list[FeedbackEvent]] = {}
    seen: set[int] = set()
    for ev in sorted(events, key=lambda e: e.event_id):
        if ev.event_id in seen:
            continue
        seen.add(ev.event_id)
        by_set.setdefault((ev.user, ev.set_id), []).append(ev)
    groups: list[Group] = []
    pairs: list[Pair] = []
    for evs in by_set.values():
        shown = evs[0].shown
        mean = shown.mean_candidates if "mean" in parts else None
        signals = shown.signal_block() if "signals" in parts else None
        thumbs = {e.candidate: float(e.value or 0.0) for e in evs if e.kind == "thumb"}
        scores = {e.candidate: float(e.value or 0.0) for e in evs if e.kind == "score"}
        if thumbs:
            if unlabelled == "negative":
                thumbs = {i: thumbs.get(i, 0.0) for i in range(shown.k)}
            groups.append(_group(shown, thumbs, mean, signals))
        if scores:
            groups.append(_group(shown, scores, mean, signals))
        for e in evs:
            if e.kind == "pick":
                pairs += [_pair(shown, e.candidate, r, mean, signals) for r in e.rejected]
    return GroupDataset.from_groups(groups, pairs)


def _group(
    shown: ShownSet,
    labels: dict[int, float],
    mean: np.ndarray | None,
    signals: np.ndarray | None,
) -> Group:
    idx = sorted(labels)
    return Group(
        shown.instruction,
        shown.candidates[idx],
        np.array([labels[i] for i in idx], dtype=np.float32),
        None if mean is None else mean[idx],
        None if signals is None else signals[idx],
    )


def _pair(
    shown: ShownSet, chosen: int, rejected: int, mean: np.ndarray | None, signals: np.ndarray | None
) -> Pair:
    return Pair(
        shown.instruction,
        shown.candidates[chosen],
        shown.candidates[rejected],
        None if mean is None else mean[chosen],
        None if mean is None else mean[rejected],
        None if signals is None else signals[chosen],
        None if signals is None else signals[rejected],
    )
