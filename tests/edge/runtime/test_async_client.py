"""The asyncio client against a real central server on loopback (tiny model)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from edge._errors import InvalidRequestError
from edge.runtime.async_client import AsyncCentralClient
from edge.runtime.client import CentralClient, Instruction


def test_async_generate_matches_the_sync_client(tiny_server) -> None:
    address = f"127.0.0.1:{tiny_server.port}"

    async def run():
        async with AsyncCentralClient(address, timeout=30) as central:
            info = await central.info()
            generation = await central.generate("Write a poem", 3, max_new_tokens=6, seed=4)
            events = [e async for e in central.stream("Write a poem", 2, max_new_tokens=4, seed=1)]
            features = await central.features("List colours", ["red"])
            return info, generation, events, features

    info, generation, events, (instruction, responses) = asyncio.run(run())
    assert info.hidden_size == 64
    with CentralClient(address) as sync:
        expected = sync.generate("Write a poem", 3, max_new_tokens=6, seed=4)
    assert generation.texts == expected.texts
    np.testing.assert_array_equal(generation.features, expected.features)
    assert isinstance(events[0], Instruction) and len(events) == 3
    assert instruction.shape == (64,) and responses.shape == (1, 64)


def test_async_invalid_request_raises_the_same_error(tiny_server) -> None:
    async def run():
        async with AsyncCentralClient(f"127.0.0.1:{tiny_server.port}") as central:
            await central.generate("hi", 100)  # over the server's max_k

    with pytest.raises(InvalidRequestError, match=r"^k:"):
        asyncio.run(run())
