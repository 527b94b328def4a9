"""The asyncio twin of `PersonalRanker`, over `AsyncCentralClient`::

    async with AsyncCentralClient("127.0.0.1:50051") as central:
        async with AsyncPersonalRanker(central, "~/.ranker", "alice", "math") as me:
            shown = await me.generate("Which number is larger, 47 or 74?", k=8)
            await me.pick(shown, shown.best.index)
            report = await me.learn()

The same calls, values and errors as `PersonalRanker` (both are
`edge.app.personal_base.PersonalBase`); what blocks runs in a worker thread
(``asyncio.to_thread``): recording (SQLite with ``synchronous=FULL`` waits for
the disk), learning (the fit, the ONNX composition, the registry's fsyncs) and
rollback, so the event loop keeps serving other users meanwhile. Ranking is
sub-millisecond and stays on the loop (``rank``). Opening one (the store, the
registry, the learner, the user's ranker) is synchronous, like opening a file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edge.app.learning import LearnReport
from edge.app.personal_base import GENERATE_DEFAULTS, PersonalBase, Shown
from edge.runtime.types import Generation

if TYPE_CHECKING:
    from edge.runtime.async_client import AsyncCentralClient  # noqa: F401 (used below)
    from edge.runtime.client_base import Prompt

__all__ = ["AsyncPersonalRanker"]


class AsyncPersonalRanker(PersonalBase["AsyncCentralClient"]):  # a string: no grpc at import
    """One user's ranker for an asyncio app; the same options and values as `PersonalRanker`."""

    async def __aenter__(self) -> AsyncPersonalRanker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def generate(self, prompt: Prompt, k: int = 8, **options: Any) -> Shown:
        """Samples K candidates from central, ranks them and records them as shown
        (see `PersonalRanker.generate`)."""
        generation = await self.central.generate(prompt, k, **{**GENERATE_DEFAULTS, **options})
        return await self.show(generation)

    async def show(self, generation: Generation) -> Shown:
        """Ranks a generation the app already has and records it as shown."""
        return await asyncio.to_thread(self._show, generation)

    async def thumbs(self, shown: Shown, candidate: int, *, up: bool) -> int:
        """Thumbs up or down on one shown candidate; returns the event id."""
        return await asyncio.to_thread(self._thumbs, shown, candidate, up)

    async def pick(self, shown: Shown, chosen: int, rejected: Sequence[int] | None = None) -> int:
        """The user preferred `chosen` over `rejected` (default: all other candidates)."""
        return await asyncio.to_thread(self._pick, shown, chosen, rejected)

    async def score(self, shown: Shown, candidate: int, value: float) -> int:
        """A real-valued rating of one candidate."""
        return await asyncio.to_thread(self._score, shown, candidate, value)

    async def learn(self) -> LearnReport:
        """Learns the feedback recorded since the last update, saves a new version
        and hot-swaps to it (in a worker thread)."""
        return await asyncio.to_thread(self._learn)

    async def rollback(self, to: int | None = None) -> int:
        """Returns to an earlier saved version (see `PersonalRanker.rollback`)."""
        return await asyncio.to_thread(self._rollback, to)

    async def close(self) -> None:
        """Closes the feedback store (central is the caller's to close)."""
        await asyncio.to_thread(self._close)
