"""A typed client for the central feature service.

Yields candidates with their features as numpy arrays as they stream in,
and turns gRPC failures into the edge exception hierarchy::

    with CentralClient("127.0.0.1:50051") as central:
        generation = central.generate("What is 12 + 7?", k=8, seed=0)
        generation.features.shape      # (8, hidden)

Options, requests, decoding and errors live in `client_base`, shared with the
asyncio twin (`AsyncCentralClient`); this module holds only the blocking loops.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Unpack

import grpc
import numpy as np

from edge._errors import CentralError
from edge.runtime.client_base import (
    ClientBase,
    FeatureOptions,
    GenerateOptions,
    Instruction,
    ModelInfo,
    Prompt,
    StreamEvent,
    VectorOptions,
)
from edge.runtime.token_wire import CandidateTokens, TokenFeatureRequest
from edge.runtime.types import Generation, ResponseVectors, Usage
from language_ranker.v1 import ranker_pb2 as pb

__all__ = [
    "CandidateTokens",
    "CentralClient",
    "Instruction",
    "ModelInfo",
    "Prompt",
    "TokenFeatureRequest",
]


class CentralClient(ClientBase):
    """Synchronous client; one channel, reusable and thread-safe.

    Constructor options (deadline, token, TLS) are those of `ClientBase`.
    """

    _grpc = grpc

    def __enter__(self) -> CentralClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Blocks until the channel connects; ConnectionLostError if it does not."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError as error:
            raise self._not_ready() from error

    def info(self) -> ModelInfo:
        """What central reports about its model and limits (asked anew each call)."""
        return self._decode_info(self._call(self._stub.Info, pb.InfoRequest(), None))

    def stream(
        self,
        prompt: Prompt,
        k: int,
        *,
        timeout: float | None = None,
        **options: Unpack[GenerateOptions],
    ) -> Iterator[StreamEvent]:
        """Yields the Instruction, then each Candidate as the server finishes it.

        `layer` is a fraction of depth (a float) or a layer index (an int);
        None uses the server's default (0.6 of depth). The other options are
        listed in `GenerateOptions`.

        Per-token features (SWIFT) are asked for only with `token_features`
        (True for the server's defaults) or when `ranker` says it needs them
        (`needs_token_features`); they then follow the candidates as one
        `CandidateTokens` per candidate, reassembled from the server's chunks.
        """
        for event in self._events(prompt, k, timeout, options):
            if not isinstance(event, Usage):
                yield event

    def generate(
        self,
        prompt: Prompt,
        k: int,
        *,
        timeout: float | None = None,
        **options: Unpack[GenerateOptions],
    ) -> Generation:
        """All K candidates, sorted by index, with the shared instruction feature.

        Takes the same keyword options as `stream`; with per-token features
        requested, each candidate carries its (T, D) `token_features`. Its
        `identity` names the model from Info, asked on the first call and kept.
        """
        generation = self._generation_builder(prompt, k)
        for event in self._events(prompt, k, timeout, options):
            generation.add(event)
        return generation.build(self._model())

    def features(
        self,
        prompt: Prompt,
        responses: Sequence[str],
        *,
        timeout: float | None = None,
        **options: Unpack[FeatureOptions],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Features for responses you already have: (instruction (d,), responses (n, d)),
        the last token's vectors; `response_vectors` gives the other vectors too."""
        request = self.build_features_request(prompt, responses, **options)
        return self._decode_features(self._call(self._stub.Features, request, timeout))

    def response_vectors(
        self,
        prompt: Prompt,
        responses: Sequence[str],
        *,
        timeout: float | None = None,
        **options: Unpack[VectorOptions],
    ) -> ResponseVectors:
        """The vectors `vectors` names (and the mean entropy, with `mean_entropy`) for
        responses you already have, one row each: what sampled candidates with these
        texts would carry, e.g. to import labelled answers for a ranker that reads
        ``vectors=("last", "mean", "embedding_mean")``. Its `identity` names the model."""
        request = self.build_features_request(prompt, responses, **options)
        reply = self._call(self._stub.Features, request, timeout)
        return self._decode_vectors(request, reply, self._model())

    def _model(self) -> ModelInfo | None:
        """Info for a generation's identity: kept from the last answer, else asked now;
        None when central cannot say (the generation's model is then unknown)."""
        if self._info is None:
            try:
                self.info()
            except CentralError:
                return None
        return self._info

    def _events(
        self, prompt: Prompt, k: int, timeout: float | None, options: GenerateOptions
    ) -> Iterator[StreamEvent | Usage]:
        """The I/O loop of Generate: every decoded event, the Usage last."""
        request = self.build_generate_request(prompt, k, **options)
        decoder = self._stream_decoder(request)
        responses = self._stub.Generate(
            request, timeout=self._deadline(timeout), metadata=self._metadata
        )
        try:
            for response in responses:
                event = decoder.decode(response)
                if event is not None:
                    yield event
        except grpc.RpcError as error:
            raise self._error(error) from error
        finally:
            responses.cancel()  # stops generation on the server if we stop early
        decoder.finish()

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as error:
            raise self._error(error) from error
