"""The gRPC servicer: validates a request, hands it to the engine, streams the result.

Each RPC does three things and nothing else: `validation` turns the request
into a checked job (or INVALID_ARGUMENT naming the field); the `engine`,
which alone runs the model, does the work; this module turns its events
into messages. A handler thread never touches the model: it waits on its
request's outbox, and the protobuf encoding and text decoding happen here,
off the engine's thread. Info reads only the loaded model's description, so
it answers at once however busy the engine is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import NoReturn, TypeVar

import grpc
import numpy as np

from language_ranker.v1 import ranker_pb2 as pb
from language_ranker.v1 import ranker_pb2_grpc as pb_grpc

from ._errors import LimitError, RequestError
from .config import EngineConfig
from .engine import (
    Done,
    Engine,
    FeaturesDone,
    InstructionReady,
    Overloaded,
    Ticket,
    TokenValues,
)
from .features import (
    SUPPORTED_ENCODINGS,
    SUPPORTED_VECTORS,
    FeatureRequest,
    encode,
    resolve_layer,
)
from .model import LoadedModel
from .outbox import StreamEnd
from .pooling import Pooled
from .sampler import SampledCandidate
from .token_features import MAX_TOP_LOGPROBS, default_token_layers, token_chunks
from .validation import ServiceLimits, validate_features, validate_generate

__all__ = ["CentralServicer", "ServiceLimits"]

log = logging.getLogger(__name__)

_Job = TypeVar("_Job")


class CentralServicer(pb_grpc.CentralServiceServicer):
    """Implements language_ranker.v1.CentralService over one loaded model and its engine."""

    def __init__(
        self,
        loaded: LoadedModel,
        limits: ServiceLimits | None = None,
        engine: EngineConfig | None = None,
    ) -> None:
        self.loaded = loaded
        self.limits = limits or ServiceLimits()
        self.engine = Engine(loaded, self.limits, engine)

    def close(self, timeout: float = 10.0) -> bool:
        """Cancels whatever is running and stops the engine; False if its thread is still
        inside a computation after `timeout` seconds."""
        return self.engine.close(timeout)

    def Info(self, request: pb.InfoRequest, context: grpc.ServicerContext) -> pb.InfoResponse:
        m = self.loaded
        return pb.InfoResponse(
            model_name=m.name,
            num_layers=m.num_layers,
            hidden_size=m.hidden_size,
            encodings=list(SUPPORTED_ENCODINGS),
            context_length=m.context_length,
            max_k=self.limits.max_k,
            default_layer_index=resolve_layer(pb.FeatureSpec(), m.num_layers),
            has_chat_template=m.has_chat_template,
            max_new_tokens_limit=self.limits.max_new_tokens,
            default_token_layers=default_token_layers(m.num_layers),
            max_top_logprobs=MAX_TOP_LOGPROBS,
            feature_vectors=list(SUPPORTED_VECTORS),
            mean_entropy=True,
            model_sha256=m.weights_sha256,
            greedy_first=True,
            weights_format=m.weights_format,
        )

    def Generate(
        self, request: pb.GenerateRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.GenerateResponse]:
        started = time.perf_counter()
        _check_prompt_size(context, request.prompt, self.limits)
        job = _checked(context, lambda: validate_generate(request, self.loaded, self.limits))
        ticket = _submitted(context, lambda d: self.engine.submit_generate(job, d))
        try:
            layout = job.tokens.layout(self.loaded.hidden_size) if job.tokens else None
            for event in ticket.events():
                if isinstance(event, StreamEnd):
                    _ended(context, event)
                elif isinstance(event, InstructionReady):
                    yield pb.GenerateResponse(
                        instruction=_instruction(
                            event.feature, event.prompt_tokens, job.features, layout
                        )
                    )
                elif isinstance(event, SampledCandidate):
                    yield pb.GenerateResponse(candidate=self._candidate(event, job.features))
                elif isinstance(event, TokenValues):
                    assert job.tokens is not None
                    for chunk in token_chunks(
                        event.index,
                        event.values,
                        job.tokens.encoding,
                        self.limits.token_chunk_bytes,
                    ):
                        ticket.outbox.sending(True)  # the stall clock runs per message
                        yield pb.GenerateResponse(token_features=chunk)
                elif isinstance(event, Done):
                    yield pb.GenerateResponse(
                        usage=pb.Usage(
                            prompt_tokens=len(job.prompt_ids),
                            generated_tokens=event.generated_tokens,
                            seconds=time.perf_counter() - started,
                        )
                    )
        finally:
            ticket.release()

    def _candidate(self, candidate: SampledCandidate, features: FeatureRequest) -> pb.Candidate:
        """The wire candidate, carrying the vectors the request asked for (v1: `feature` only)."""
        encoding = features.encoding
        return pb.Candidate(
            index=candidate.index,
            text=self.loaded.tokenizer.decode(candidate.token_ids, skip_special_tokens=True),
            token_ids=candidate.token_ids,
            num_tokens=len(candidate.token_ids),
            finish_reason=pb.FINISH_REASON_EOS
            if candidate.finished_by_eos
            else pb.FINISH_REASON_LENGTH,
            cumulative_logprob=candidate.cumulative_logprob,
            feature=encode(candidate.feature, encoding) if features.last else None,
            mean_feature=encode(candidate.mean_feature, encoding) if features.mean else None,
            mean_entropy=candidate.mean_entropy if features.mean_entropy else None,
            embedding_mean_feature=_embedding_mean(candidate, features),
        )

    def Features(
        self, request: pb.FeaturesRequest, context: grpc.ServicerContext
    ) -> pb.FeaturesResponse:
        _check_prompt_size(context, request.prompt, self.limits)
        job = _checked(context, lambda: validate_features(request, self.loaded, self.limits))
        ticket = _submitted(context, lambda d: self.engine.submit_features(job, d))
        try:
            for event in ticket.events():
                if isinstance(event, StreamEnd):
                    _ended(context, event)
                assert isinstance(event, FeaturesDone)
                return _features_response(event, job.features, len(job.prompt_ids))
        finally:
            ticket.release()
        _abort(context, grpc.StatusCode.INTERNAL, "the engine ended the request without a result")


def _features_response(
    done: FeaturesDone, features: FeatureRequest, prompt_tokens: int
) -> pb.FeaturesResponse:
    encoding, pooled = features.encoding, done.pooled
    return pb.FeaturesResponse(
        instruction=_instruction(done.instruction, prompt_tokens, features),
        features=[encode(p.last[0], encoding) for p in pooled] if features.last else [],
        mean_features=[encode(p.mean[0], encoding) for p in pooled] if features.mean else [],
        mean_entropies=_entropies(pooled) if features.mean_entropy else [],
        embedding_mean_features=_embedding_means(pooled, encoding)
        if features.embedding_mean
        else [],
    )


def _entropies(pooled: list[Pooled]) -> list[float]:
    """Each response's mean entropy (`pool_responses` computed them: mean_entropy=True)."""
    known = [p.mean_entropy for p in pooled if p.mean_entropy is not None]
    assert len(known) == len(pooled), "pool_responses ran without logits"
    return known


def _embedding_mean(candidate: SampledCandidate, features: FeatureRequest) -> pb.Tensor | None:
    """The candidate's embedding mean, encoded, when the request asked for it."""
    if not features.embedding_mean:
        return None
    assert candidate.embedding_mean_feature is not None, "sampled without hidden state 0"
    return encode(candidate.embedding_mean_feature, features.encoding)


def _embedding_means(pooled: list[Pooled], encoding: int) -> list[pb.Tensor]:
    """Each response's embedding mean, encoded (the pooling kept them: embedding=True)."""
    means = [p.embedding_mean for p in pooled if p.embedding_mean is not None]
    assert len(means) == len(pooled), "the responses were pooled without hidden state 0"
    return [encode(mean, encoding) for mean in means]


def _instruction(
    feature: np.ndarray,
    prompt_tokens: int,
    features: FeatureRequest,
    layout: pb.TokenFeatureLayout | None = None,
) -> pb.InstructionFeature:
    return pb.InstructionFeature(
        feature=encode(feature, features.encoding),
        layer_index=features.layer,
        prompt_tokens=prompt_tokens,
        token_features=layout,
    )


def _checked(context: grpc.ServicerContext, validate: Callable[[], _Job]) -> _Job:
    """The validated job, or the call aborted with INVALID_ARGUMENT naming the field
    (RESOURCE_EXHAUSTED naming the limit for a request over one)."""
    try:
        return validate()
    except RequestError as error:
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(error))
    except LimitError as error:
        _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    context.abort(code, details)
    raise AssertionError("ServicerContext.abort returns only by raising")


def _check_prompt_size(
    context: grpc.ServicerContext, prompt: pb.Prompt, limits: ServiceLimits
) -> None:
    """RESOURCE_EXHAUSTED for a prompt over `max_prompt_bytes`, before any tokenising."""
    size = prompt.ByteSize()
    if size > limits.max_prompt_bytes:
        _abort(
            context,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"prompt is {size} bytes, at most {limits.max_prompt_bytes} (max_prompt_bytes)",
        )


def _submitted(context: grpc.ServicerContext, submit: Callable[[float | None], Ticket]) -> Ticket:
    """The engine's ticket for this call, wired to the call's end and deadline.

    A call the client cancels, or whose deadline passes, cancels its work at
    once (gRPC runs the callback); a client found stuck in a send is cancelled
    by the engine, which also cancels the call so its thread is freed.
    """
    remaining = context.time_remaining()
    deadline = None if remaining is None or remaining > 1e9 else time.monotonic() + remaining
    try:
        ticket = submit(deadline)
    except Overloaded as error:
        code = (
            grpc.StatusCode.UNAVAILABLE if error.unavailable else grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        _abort(context, code, str(error))
    if not context.add_callback(ticket.cancel):  # the call already ended
        ticket.cancel()
    ticket.on_stall(context.cancel)
    return ticket


def _ended(context: grpc.ServicerContext, end: StreamEnd) -> NoReturn:
    log.info("request ended early: %s %s", end.code.name, end.details)
    _abort(context, end.code, end.details)
