"""The asyncio twin of `CentralClient`, on grpc.aio.

async with AsyncCentralClient("127.0.0.1:50051") as central:
    async for event in central.stream("What is 12 + 7?", k=4):
        ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from edge._errors import ServerError
from edge.runtime.client import (
    Instruction,
    ModelInfo,
    Prompt,
    _auth_metadata,
    _candidate,
    _feature_spec,
    _generate_request,
    _info,
    _instruction,
    _open_channel,
    _prompt,
    _translate,
)
from edge.runtime.types import Candidate, Generation
from edge.runtime.wire import decode_tensor
from language_ranker.v1 import ranker_pb2 as pb
from language_ranker.v1 import ranker_pb2_grpc as pb_grpc

__all__ = ["AsyncCentralClient"]

_MiB = 1 << 20


class AsyncCentralClient:
    """Asynchronous client; the same options and errors as `CentralClient`."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        timeout: float | None = 300.0,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | Path | None = None,
        max_receive_bytes: int = 64 * _MiB,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._metadata = _auth_metadata(token)
        self._channel = _open_channel(aio, target, tls, root_certificates, max_receive_bytes)
        self._stub = pb_grpc.CentralServiceStub(self._channel)

    async def __aenter__(self) -> AsyncCentralClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def info(self) -> ModelInfo:
        return _info(await self._call(self._stub.Info, pb.InfoRequest()))

    async def stream(
        self, prompt: Prompt, k: int, *, timeout: float | None = None, **options: Any
    ) -> AsyncIterator[Instruction | Candidate]:
        """Yields the Instruction, then each Candidate as it finishes (see CentralClient.stream)."""
        call = self._stub.Generate(
            _generate_request(prompt, k, **options),
            timeout=self.timeout if timeout is None else timeout,
            metadata=self._metadata,
        )
        try:
            async for response in call:
                event = response.WhichOneof("event")
                if event == "instruction":
                    yield _instruction(response.instruction)
                elif event == "candidate":
                    yield _candidate(response.candidate)
        except grpc.RpcError as error:
            raise _translate(error, self.target) from error
        finally:
            call.cancel()

    async def generate(self, prompt: Prompt, k: int, **options: Any) -> Generation:
        """All K candidates sorted by index, with the instruction feature."""
        instruction: Instruction | None = None
        candidates: list[Candidate] = []
        async for event in self.stream(prompt, k, **options):
            if isinstance(event, Instruction):
                instruction = event
            else:
                candidates.append(event)
        if instruction is None or len(candidates) != k:
            raise ServerError(f"stream ended early: got {len(candidates)} of {k} candidates")
        return Generation(
            prompt=prompt if isinstance(prompt, str) else str(list(prompt)),
            instruction=instruction.feature,
            candidates=tuple(sorted(candidates, key=lambda c: c.index)),
            layer_index=instruction.layer_index,
        )

    async def features(
        self, prompt: Prompt, responses: Sequence[str], *, layer: float | int | None = None,
        encoding: str = "fp16", raw: bool = False,
    ) -> tuple[Any, Any]:  # fmt: skip
        """(instruction (d,), responses (n, d)) for responses you already have."""
        import numpy as np

        request = pb.FeaturesRequest(
            prompt=_prompt(prompt, raw), responses=list(responses),
            features=_feature_spec(layer, encoding),
        )  # fmt: skip
        reply = await self._call(self._stub.Features, request)
        instruction = decode_tensor(reply.instruction.feature)
        rows = [decode_tensor(t) for t in reply.features]
        return instruction, np.stack(rows) if rows else np.zeros((0, instruction.shape[0]))

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise _translate(error, self.target) from error
