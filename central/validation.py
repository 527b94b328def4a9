"""Every check a request passes before any work starts.

A check that fails raises `RequestError` naming the field and what was
wrong (``k: must be between 1 and 64, got 0``); the servicer answers it with
INVALID_ARGUMENT. A request that passes comes out as a plain dataclass
(`GenerateJob`, `FeaturesJob`) holding token ids and resolved settings, so
nothing past this module reads a protobuf request or re-checks a field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from language_ranker.v1 import ranker_pb2 as pb

from ._errors import LimitError, RequestError
from .config import ServiceLimits  # torch-free, so the CLI can show its defaults
from .features import FeatureRequest, resolve_features
from .model import LoadedModel
from .prompting import render_prompt, response_ids
from .sampler import SamplingConfig
from .token_features import TokenRequest, resolve_token_spec

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "FeaturesJob",
    "GenerateJob",
    "ServiceLimits",
    "sampling_config",
    "validate_features",
    "validate_generate",
]

DEFAULT_MAX_NEW_TOKENS = 128  # SamplingParams.max_new_tokens when unset


@dataclass(frozen=True)
class GenerateJob:
    """A valid GenerateRequest."""

    prompt_ids: list[int]  # the rendered prompt
    sampling: SamplingConfig  # K and how to sample
    features: FeatureRequest  # feature layer and encoding
    tokens: TokenRequest | None  # per-token features, None when not asked for


@dataclass(frozen=True)
class FeaturesJob:
    """A valid FeaturesRequest."""

    prompt_ids: list[int]  # the rendered prompt
    responses: list[list[int]]  # token ids of each response, in request order
    features: FeatureRequest  # feature layer and encoding


def validate_generate(
    request: pb.GenerateRequest, loaded: LoadedModel, limits: ServiceLimits
) -> GenerateJob:
    """The checked GenerateRequest, or `RequestError` for its first bad field."""
    if not 1 <= request.k <= limits.max_k:
        raise RequestError("k", f"must be between 1 and {limits.max_k}, got {request.k}")
    sampling = sampling_config(request.k, request.sampling, limits.max_new_tokens)
    features = resolve_features(request.features, loaded.num_layers)
    prompt_ids = render_prompt(loaded, request.prompt)
    _check_context(loaded, len(prompt_ids), sampling.max_new_tokens)
    tokens = resolve_token_spec(request.token_features, loaded.num_layers)
    return GenerateJob(prompt_ids, sampling, features, tokens)


def validate_features(
    request: pb.FeaturesRequest, loaded: LoadedModel, limits: ServiceLimits
) -> FeaturesJob:
    """The checked FeaturesRequest, or `RequestError` for its first bad field."""
    features = resolve_features(request.features, loaded.num_layers)
    if len(request.responses) > limits.max_feature_responses:
        raise RequestError(
            "responses",
            f"{len(request.responses)} responses, at most {limits.max_feature_responses}",
        )
    # Sizes first: tokenising megabytes of text costs seconds of CPU.
    size = sum(len(r.encode()) for r in request.responses)
    if size > limits.max_features_bytes:
        raise LimitError(
            "max_features_bytes",
            f"the responses are {size} bytes, at most {limits.max_features_bytes}",
        )
    prompt_ids = render_prompt(loaded, request.prompt)
    responses, tokens = [], 0
    for i, text in enumerate(request.responses):
        ids = response_ids(loaded, text)
        tokens += len(ids) or 1
        if tokens > limits.max_features_tokens:  # refused before the rest is tokenised
            raise LimitError(
                "max_features_tokens",
                f"the responses hold at least {tokens} tokens, at most "
                f"{limits.max_features_tokens}",
            )
        if len(prompt_ids) + len(ids) > loaded.context_length:
            raise RequestError(
                f"responses[{i}]",
                f"prompt + response is {len(prompt_ids) + len(ids)} tokens, "
                f"the model's context is {loaded.context_length}",
            )
        responses.append(ids)
    return FeaturesJob(prompt_ids, responses, features)


def sampling_config(k: int, params: pb.SamplingParams, max_tokens_limit: int) -> SamplingConfig:
    """SamplingParams with defaults filled in: temperature 1, top_p 1, 128 new tokens."""
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
        greedy_first=bool(params.greedy_first),
    )


def _check_context(loaded: LoadedModel, prompt_tokens: int, new_tokens: int) -> None:
    context = loaded.context_length
    if prompt_tokens >= context:
        raise RequestError("prompt", f"is {prompt_tokens} tokens, the model's context is {context}")
    if prompt_tokens + new_tokens > context:
        raise RequestError(
            "sampling.max_new_tokens",
            f"prompt ({prompt_tokens} tokens) + {new_tokens} new tokens exceeds "
            f"the model's context of {context}",
        )
