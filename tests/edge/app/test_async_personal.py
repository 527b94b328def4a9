"""AsyncPersonalRanker and PersonalRanker are one base with two front ends: the same
calls give the same rankings, events, versions and head bytes (real central, tiny model)."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest

from edge import AsyncCentralClient, AsyncPersonalRanker, CentralClient, PersonalRanker
from edge.app.store import FeedbackStore

PROMPTS = ["What is two plus three?", "Write a poem about the sea.", "List three colours."]


def _sync_run(address: str, home: Path) -> list[object]:
    trace: list[object] = []
    with CentralClient(address) as central, PersonalRanker(central, home, "ada", "chat") as me:
        for round_ in range(2):
            for i, prompt in enumerate(PROMPTS):
                shown = me.generate(prompt, k=4, max_new_tokens=6, seed=10 * round_ + i)
                trace.append(shown.order)
                trace.append(me.pick(shown, shown.order[-1]))
                trace.append(me.thumbs(shown, shown.order[0], up=False))
                trace.append(me.score(shown, 1, 2.5))
            report = me.learn()
            trace.append((report.version, report.new_events, report.cursor))
        trace.append(me.rollback())
        trace.append(me.version)
    return trace


async def _async_run(address: str, home: Path) -> list[object]:
    trace: list[object] = []
    async with (
        AsyncCentralClient(address) as central,
        AsyncPersonalRanker(central, home, "ada", "chat") as me,
    ):
        for round_ in range(2):
            for i, prompt in enumerate(PROMPTS):
                shown = await me.generate(prompt, k=4, max_new_tokens=6, seed=10 * round_ + i)
                trace.append(shown.order)
                trace.append(await me.pick(shown, shown.order[-1]))
                trace.append(await me.thumbs(shown, shown.order[0], up=False))
                trace.append(await me.score(shown, 1, 2.5))
            report = await me.learn()
            trace.append((report.version, report.new_events, report.cursor))
        trace.append(await me.rollback())
        trace.append(me.version)
    return trace


def test_async_and_sync_give_the_same_rankings_events_and_versions(
    tiny_server, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{tiny_server.port}"
    sync = _sync_run(address, tmp_path / "sync")
    asynchronous = asyncio.run(_async_run(address, tmp_path / "async"))
    assert sync == asynchronous
    assert sync[-2:] == [1, 1]  # rolled back to v1
    assert any(order != (0, 1, 2, 3) for order in sync[13:25:4])  # v1 ranked the 2nd round
    for name in ("sync", "async"):
        with FeedbackStore(tmp_path / name / "feedback.sqlite3") as store:
            assert len(store.events("ada")) == 18
    for version in (1, 2):  # the same heads, byte for byte
        weights = [
            (tmp_path / name / f"rankers/users/ada/chat/v00000{version}.weights.npz").read_bytes()
            for name in ("sync", "async")
        ]
        assert weights[0] == weights[1]


@pytest.mark.parametrize(
    "method", ["generate", "show", "thumbs", "pick", "score", "learn", "rollback", "close"]
)
def test_both_front_ends_take_the_same_arguments(method: str) -> None:
    sync, asynchronous = getattr(PersonalRanker, method), getattr(AsyncPersonalRanker, method)
    assert inspect.iscoroutinefunction(asynchronous) and not inspect.iscoroutinefunction(sync)
    parameters = [inspect.signature(f).parameters.keys() for f in (sync, asynchronous)]
    assert parameters[0] == parameters[1]
