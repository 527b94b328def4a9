"""The gRPC servicer: validates a request, runs the work, streams the result.

Each RPC does three things and nothing else: `validation` turns the request
into a checked job (or INVALID_ARGUMENT naming the field); the sampler,
`pooling` or `token_features` does the work; this module turns the results
into messages. No forward pass runs here.

One model serves every request; a lock runs one forward pass sequence at a
time (two concurrent requests on a 2-core CPU would only thrash). Requests
queue on that lock and each is served completely and correctly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import NoReturn, TypeVar

import grpc
import numpy as np

from language_ranker.v1 import ranker_pb2 as pb
from language_ranker.v1 import ranker_pb2_grpc as pb_grpc

from ._errors import RequestError
from .features import (
    SUPPORTED_ENCODINGS,
    SUPPORTED_VECTORS,
    FeatureRequest,
    encode,
    resolve_layer,
)
from .model import LoadedModel
from .pooling import Pooled, pool_responses
from .sampler import Cancelled, SampledCandidate, sample_stream
from .token_features import (
    MAX_TOP_LOGPROBS,
    TokenRequest,
    compute_token_features,
    default_token_layers,
    token_chunks,
)
from .validation import (
    FeaturesJob,
    GenerateJob,
    ServiceLimits,
    validate_features,
    validate_generate,
)

__all__ = ["CentralServicer", "ServiceLimits"]

log = logging.getLogger(__name__)

_Job = TypeVar("_Job")


class CentralServicer(pb_grpc.CentralServiceServicer):
    """Implements language_ranker.v1.CentralService over one loaded model."""

    def __init__(self, loaded: LoadedModel, limits: ServiceLimits | None = None) -> None:
        self.loaded = loaded
        self.limits = limits or ServiceLimits()
        self._model_lock = threading.Lock()

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
        )

    def Generate(
        self, request: pb.GenerateRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.GenerateResponse]:
        started = time.perf_counter()
        job = _checked(context, lambda: validate_generate(request, self.loaded, self.limits))
        with self._model_lock:
            try:
                generated = yield from self._generate(job, _stopper(context))
            except Cancelled:
                log.info("generation stopped: client cancelled or deadline passed")
                return
        yield pb.GenerateResponse(
            usage=pb.Usage(
                prompt_tokens=len(job.prompt_ids),
                generated_tokens=generated,
                seconds=time.perf_counter() - started,
            )
        )

    def _generate(
        self, job: GenerateJob, should_stop: Callable[[], bool]
    ) -> Generator[pb.GenerateResponse, None, int]:
        """Instruction, candidates as they finish, then token features; returns tokens generated."""
        features = job.features
        instruction, candidates = sample_stream(
            self.loaded,
            job.prompt_ids,
            job.sampling,
            features.layer,
            should_stop=should_stop,
            entropy=features.mean_entropy,
        )
        layout = job.tokens.layout(self.loaded.hidden_size) if job.tokens else None
        yield pb.GenerateResponse(
            instruction=_instruction(
                instruction, job.prompt_ids, features.layer, features.encoding, layout
            )
        )
        responses: dict[int, list[int]] = {}
        for candidate in candidates:
            responses[candidate.index] = candidate.token_ids
            yield pb.GenerateResponse(candidate=self._candidate(candidate, features))
        if job.tokens is not None:
            yield from self._token_features(job.prompt_ids, responses, job.tokens, should_stop)
        return sum(len(ids) for ids in responses.values())

    def _token_features(
        self,
        prompt_ids: list[int],
        responses: dict[int, list[int]],
        request: TokenRequest,
        should_stop: Callable[[], bool],
    ) -> Iterator[pb.GenerateResponse]:
        """Per-token features of every candidate, in index order, chunked."""
        order = sorted(responses)
        computed = compute_token_features(
            self.loaded,
            prompt_ids,
            [responses[i] for i in order],
            request,
            batch_size=self.limits.token_batch,
        )
        for position, values in computed:
            if should_stop():
                raise Cancelled
            for chunk in token_chunks(
                order[position], values, request.encoding, self.limits.token_chunk_bytes
            ):
                yield pb.GenerateResponse(token_features=chunk)

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
        )

    def Features(
        self, request: pb.FeaturesRequest, context: grpc.ServicerContext
    ) -> pb.FeaturesResponse:
        job = _checked(context, lambda: validate_features(request, self.loaded, self.limits))
        with self._model_lock:
            return self._features(job)

    def _features(self, job: FeaturesJob) -> pb.FeaturesResponse:
        features = job.features
        layer, encoding = features.layer, features.encoding
        instruction, pooled = pool_responses(
            self.loaded,
            job.prompt_ids,
            job.responses,
            [layer],
            mean_entropy=features.mean_entropy,
            batch_size=self.limits.features_batch,
        )
        return pb.FeaturesResponse(
            instruction=_instruction(instruction[0], job.prompt_ids, layer, encoding),
            features=[encode(p.last[0], encoding) for p in pooled] if features.last else [],
            mean_features=[encode(p.mean[0], encoding) for p in pooled] if features.mean else [],
            mean_entropies=_entropies(pooled) if features.mean_entropy else [],
        )


def _entropies(pooled: list[Pooled]) -> list[float]:
    """Each response's mean entropy (`pool_responses` computed them: mean_entropy=True)."""
    known = [p.mean_entropy for p in pooled if p.mean_entropy is not None]
    assert len(known) == len(pooled), "pool_responses ran without logits"
    return known


def _instruction(
    feature: np.ndarray,
    prompt_ids: list[int],
    layer: int,
    encoding: int,
    layout: pb.TokenFeatureLayout | None = None,
) -> pb.InstructionFeature:
    return pb.InstructionFeature(
        feature=encode(feature, encoding),
        layer_index=layer,
        prompt_tokens=len(prompt_ids),
        token_features=layout,
    )


def _checked(context: grpc.ServicerContext, validate: Callable[[], _Job]) -> _Job:
    """The validated job, or the call aborted with INVALID_ARGUMENT naming the field."""
    try:
        return validate()
    except RequestError as error:
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(error))


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    context.abort(code, details)
    raise AssertionError("ServicerContext.abort returns only by raising")


def _stopper(context: grpc.ServicerContext) -> Callable[[], bool]:
    """True once the client cancelled or the deadline passed."""
    return lambda: not context.is_active()
