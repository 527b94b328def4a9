"""The gRPC servicer: validates requests, runs the sampler, streams results.

One model serves every request; a lock runs one forward pass sequence at a
time (two concurrent requests on a 2-core CPU would only thrash). Requests
queue on that lock and each is served completely and correctly.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import torch

from language_ranker.v1 import ranker_pb2 as pb
from language_ranker.v1 import ranker_pb2_grpc as pb_grpc

from ._errors import RequestError, UnsupportedError
from .features import SUPPORTED_ENCODINGS, encode, resolve_encoding, resolve_layer
from .model import LoadedModel
from .prompting import render_prompt, response_ids
from .sampler import Cancelled, SampledCandidate, SamplingConfig, sample
from .token_features import (
    DEFAULT_CHUNK_BYTES,
    MAX_TOP_LOGPROBS,
    TokenRequest,
    compute_token_features,
    default_token_layers,
    resolve_token_spec,
    token_chunks,
)

__all__ = ["CentralServicer", "ServiceLimits"]

log = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 128


@dataclass(frozen=True)
class ServiceLimits:
    """What a single request may ask for; reported by Info."""

    max_k: int = 64  # GenerateRequest.k must be in 1..max_k
    max_new_tokens: int = 1024  # largest SamplingParams.max_new_tokens accepted
    max_feature_responses: int = 256  # most responses in one Features request
    features_batch: int = 8  # responses per forward pass in Features
    token_chunk_bytes: int = DEFAULT_CHUNK_BYTES  # payload of one TokenFeatures message
    token_batch: int = 4  # responses per forward pass when computing per-token features


class CentralServicer(pb_grpc.CentralServiceServicer):
    """Implements language_ranker.v1.CentralService over one loaded model."""

    def __init__(self, loaded: LoadedModel, limits: ServiceLimits | None = None) -> None:
        self.loaded = loaded
        self.limits = limits or ServiceLimits()
        self._model_lock = threading.Lock()

    # ------------------------------------------------------------ Info

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
        )

    # ------------------------------------------------------------ Generate

    def Generate(
        self, request: pb.GenerateRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.GenerateResponse]:
        started = time.perf_counter()
        try:
            prompt_ids, config, layer, encoding = self._validate_generate(request)
            tokens = resolve_token_spec(request.token_features, self.loaded.num_layers)
        except RequestError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except UnsupportedError as error:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, str(error))

        generated = 0
        responses: dict[int, list[int]] = {}
        with self._model_lock:
            stop = _stopper(context)
            events = sample(self.loaded, prompt_ids, config, layer, should_stop=stop)
            try:
                instruction = next(events)
                yield pb.GenerateResponse(
                    instruction=pb.InstructionFeature(
                        feature=encode(instruction, encoding),
                        layer_index=layer,
                        prompt_tokens=len(prompt_ids),
                        token_features=tokens.layout(self.loaded.hidden_size) if tokens else None,
                    )
                )
                for candidate in events:
                    generated += len(candidate.token_ids)
                    responses[candidate.index] = candidate.token_ids
                    yield pb.GenerateResponse(candidate=self._candidate(candidate, encoding))
                if tokens is not None:
                    yield from self._token_features(prompt_ids, responses, tokens, stop)
            except Cancelled:
                log.info("generation stopped: client cancelled or deadline passed")
                return
        yield pb.GenerateResponse(
            usage=pb.Usage(
                prompt_tokens=len(prompt_ids),
                generated_tokens=generated,
                seconds=time.perf_counter() - started,
            )
        )

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

    def _candidate(self, candidate: SampledCandidate, encoding: int) -> pb.Candidate:
        tokenizer = self.loaded.tokenizer
        return pb.Candidate(
            index=candidate.index,
            text=tokenizer.decode(candidate.token_ids, skip_special_tokens=True),
            token_ids=candidate.token_ids,
            num_tokens=len(candidate.token_ids),
            finish_reason=pb.FINISH_REASON_EOS
            if candidate.finished_by_eos
            else pb.FINISH_REASON_LENGTH,
            cumulative_logprob=candidate.cumulative_logprob,
            feature=encode(candidate.feature, encoding),
        )

    def _validate_generate(
        self, request: pb.GenerateRequest
    ) -> tuple[list[int], SamplingConfig, int, int]:
        limits = self.limits
        if not 1 <= request.k <= limits.max_k:
            raise RequestError("k", f"must be between 1 and {limits.max_k}, got {request.k}")
        config = _sampling_config(request.k, request.sampling, limits.max_new_tokens)
        layer = resolve_layer(request.features, self.loaded.num_layers)
        encoding = resolve_encoding(request.features.encoding)
        prompt_ids = render_prompt(self.loaded, request.prompt)
        self._check_context(len(prompt_ids), config.max_new_tokens)
        return prompt_ids, config, layer, encoding

    def _check_context(self, prompt_tokens: int, new_tokens: int) -> None:
        context = self.loaded.context_length
        if prompt_tokens >= context:
            raise RequestError(
                "prompt", f"is {prompt_tokens} tokens, the model's context is {context}"
            )
        if prompt_tokens + new_tokens > context:
            raise RequestError(
                "sampling.max_new_tokens",
                f"prompt ({prompt_tokens} tokens) + {new_tokens} new tokens exceeds "
                f"the model's context of {context}",
            )

    # ------------------------------------------------------------ Features

    def Features(
        self, request: pb.FeaturesRequest, context: grpc.ServicerContext
    ) -> pb.FeaturesResponse:
        try:
            layer = resolve_layer(request.features, self.loaded.num_layers)
            encoding = resolve_encoding(request.features.encoding)
            prompt_ids = render_prompt(self.loaded, request.prompt)
            responses = self._validate_responses(request.responses, len(prompt_ids))
        except RequestError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        with self._model_lock:
            instruction, features = self._forward_features(prompt_ids, responses, layer)
        return pb.FeaturesResponse(
            instruction=pb.InstructionFeature(
                feature=encode(instruction, encoding),
                layer_index=layer,
                prompt_tokens=len(prompt_ids),
            ),
            features=[encode(f, encoding) for f in features],
        )

    def _validate_responses(self, responses: list[str], prompt_tokens: int) -> list[list[int]]:
        if len(responses) > self.limits.max_feature_responses:
            raise RequestError(
                "responses",
                f"{len(responses)} responses, at most {self.limits.max_feature_responses}",
            )
        encoded = [response_ids(self.loaded, r) for r in responses]
        for i, ids in enumerate(encoded):
            if prompt_tokens + len(ids) > self.loaded.context_length:
                raise RequestError(
                    f"responses[{i}]",
                    f"prompt + response is {prompt_tokens + len(ids)} tokens, "
                    f"the model's context is {self.loaded.context_length}",
                )
        return encoded

    def _forward_features(
        self, prompt_ids: list[int], responses: list[list[int]], layer: int
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """One right-padded forward pass per batch of prompt+response sequences.

        Causal attention means padding after a sequence cannot change the
        hidden states before it, so each row's last real position is exact.
        """
        model = self.loaded.model
        pad = 0
        instruction: np.ndarray | None = None
        features: list[np.ndarray] = []
        batches = [
            responses[i : i + self.limits.features_batch]
            for i in range(0, len(responses), self.limits.features_batch)
        ]
        with torch.inference_mode():
            for batch in batches or [[]]:
                rows = [prompt_ids + ids for ids in batch] or [prompt_ids]
                width = max(len(r) for r in rows)
                input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
                mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
                out = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
                hidden = out.hidden_states[layer].float()
                if instruction is None:
                    instruction = hidden[0, len(prompt_ids) - 1].numpy().copy()
                features.extend(
                    hidden[i, len(r) - 1].numpy().copy() for i, r in enumerate(rows[: len(batch)])
                )
        assert instruction is not None
        return instruction, features


def _sampling_config(k: int, params: pb.SamplingParams, max_tokens_limit: int) -> SamplingConfig:
    temperature = params.temperature if params.HasField("temperature") else 1.0
    if not (math.isfinite(temperature) and temperature >= 0.0):
        raise RequestError("sampling.temperature", f"must be >= 0, got {temperature}")
    top_p = params.top_p if params.HasField("top_p") else 1.0
    if not (math.isfinite(top_p) and 0.0 < top_p <= 1.0):
        raise RequestError("sampling.top_p", f"must be in (0, 1], got {top_p}")
    max_new = params.max_new_tokens if params.HasField("max_new_tokens") else DEFAULT_MAX_NEW_TOKENS
    if not 1 <= max_new <= max_tokens_limit:
        raise RequestError(
            "sampling.max_new_tokens", f"must be between 1 and {max_tokens_limit}, got {max_new}"
        )
    return SamplingConfig(
        k=k,
        temperature=float(temperature),
        top_p=float(top_p),
        top_k=int(params.top_k),
        max_new_tokens=int(max_new),
        seed=int(params.seed) if params.HasField("seed") else None,
    )


def _stopper(context: grpc.ServicerContext) -> Callable[[], bool]:
    """True once the client cancelled or the deadline passed."""
    return lambda: not context.is_active()
