"""The asyncio twin of `CentralClient`, on grpc.aio::

    async with AsyncCentralClient("127.0.0.1:50051") as central:
        async for event in central.stream("What is 12 + 7?", k=4):
            ...

Options, requests, decoding and errors live in `client_base`, shared with the
blocking client, so both take the same options and return the same values
(float32 features, per-token features, usage); this module holds only the
awaiting loops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any, Unpack

import grpc
import numpy as np
from grpc import aio

from edge._errors import CentralError
from edge.runtime.client_base import (
    ClientBase,
    FeatureOptions,
    GenerateOptions,
    ModelInfo,
    Prompt,
    StreamEvent,
    VectorOptions,
)
from edge.runtime.types import Generation, ResponseVectors, Usage
from language_ranker.v1 import ranker_pb2 as pb

__all__ = ["AsyncCentralClient"]


class AsyncCentralClient(ClientBase):
    """Asynchronous client; the same options, values and errors as `CentralClient`."""

    _grpc = aio

    async def __aenter__(self) -> AsyncCentralClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Waits until the channel connects; ConnectionLostError if it does not."""
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout)
        except TimeoutError as error:
            raise self._not_ready() from error

    async def info(self) -> ModelInfo:
        """What central reports about its model and limits (asked anew each call)."""
        return self._decode_info(await self._call(self._stub.Info, pb.InfoRequest(), None))

    async def stream(
        self,
        prompt: Prompt,
        k: int,
        *,
        timeout: float | None = None,
        **options: Unpack[GenerateOptions],
    ) -> AsyncIterator[StreamEvent]:
        """Yields the Instruction, then each Candidate as it finishes, then any
        per-token features (see `CentralClient.stream`)."""
        async for event in self._events(prompt, k, timeout, options):
            if not isinstance(event, Usage):
                yield event

    async def generate(
        self,
        prompt: Prompt,
        k: int,
        *,
        timeout: float | None = None,
        **options: Unpack[GenerateOptions],
    ) -> Generation:
        """All K candidates sorted by index, with the instruction feature
        (see `CentralClient.generate`)."""
        generation = self._generation_builder(prompt, k)
        async for event in self._events(prompt, k, timeout, options):
            generation.add(event)
        return generation.build(await self._model())

    async def features(
        self,
        prompt: Prompt,
        responses: Sequence[str],
        *,
        timeout: float | None = None,
        **options: Unpack[FeatureOptions],
    ) -> tuple[np.ndarray, np.ndarray]:
        """(instruction (d,), responses (n, d)) for responses you already have."""
        request = self.build_features_request(prompt, responses, **options)
        return self._decode_features(await self._call(self._stub.Features, request, timeout))

    async def response_vectors(
        self,
        prompt: Prompt,
        responses: Sequence[str],
        *,
        timeout: float | None = None,
        **options: Unpack[VectorOptions],
    ) -> ResponseVectors:
        """The vectors of responses you already have (see `CentralClient.response_vectors`)."""
        request = self.build_features_request(prompt, responses, **options)
        reply = await self._call(self._stub.Features, request, timeout)
        return self._decode_vectors(request, reply, await self._model())

    async def _model(self) -> ModelInfo | None:
        """Info for a generation's identity (see `CentralClient._model`)."""
        if self._info is None:
            try:
                await self.info()
            except CentralError:
                return None
        return self._info

    async def _events(
        self, prompt: Prompt, k: int, timeout: float | None, options: GenerateOptions
    ) -> AsyncIterator[StreamEvent | Usage]:
        """The I/O loop of Generate: every decoded event, the Usage last."""
        request = self.build_generate_request(prompt, k, **options)
        decoder = self._stream_decoder(request)
        call = self._stub.Generate(
            request, timeout=self._deadline(timeout), metadata=self._metadata
        )
        try:
            async for response in call:
                event = decoder.decode(response)
                if event is not None:
                    yield event
        except grpc.RpcError as error:
            raise self._error(error) from error
        finally:
            call.cancel()  # stops generation on the server if we stop early
        decoder.finish()

    async def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return await method(request, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as error:
            raise self._error(error) from error
