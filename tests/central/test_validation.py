"""Request validation without a server: defaults filled in, errors named by field."""

from __future__ import annotations

import time

import pytest

import central
from central._errors import ModelLoadError, RequestError, ServiceError
from central.prompting import render_prompt
from central.validation import ServiceLimits, validate_features, validate_generate
from language_ranker.v1 import ranker_pb2 as pb


def test_a_minimal_generate_request_gets_the_documented_defaults(tiny_model) -> None:
    request = pb.GenerateRequest(prompt=pb.Prompt(text="Hi there"), k=3)
    job = validate_generate(request, tiny_model, ServiceLimits())
    assert job.prompt_ids == render_prompt(tiny_model, request.prompt)
    assert (job.sampling.k, job.sampling.temperature, job.sampling.top_p) == (3, 1.0, 1.0)
    assert (job.sampling.max_new_tokens, job.sampling.seed) == (128, None)
    assert (job.features.layer, job.features.encoding) == (2, pb.ENCODING_FP16)
    assert job.tokens is None


def test_limits_are_the_servers_not_the_defaults(tiny_model) -> None:
    limits = ServiceLimits(max_k=2, max_feature_responses=1)
    with pytest.raises(RequestError) as raised:
        validate_generate(pb.GenerateRequest(prompt=pb.Prompt(text="Hi"), k=3), tiny_model, limits)
    assert str(raised.value) == "k: must be between 1 and 2, got 3"
    request = pb.FeaturesRequest(prompt=pb.Prompt(text="Hi"), responses=["a", "b"])
    with pytest.raises(RequestError) as raised:
        validate_features(request, tiny_model, limits)
    assert raised.value.field == "responses"


def test_features_request_encodes_each_response(tiny_model) -> None:
    request = pb.FeaturesRequest(
        prompt=pb.Prompt(text="Hi"),
        responses=["red", ""],
        features=pb.FeatureSpec(layer_index=-1, encoding=pb.ENCODING_INT8),
    )
    job = validate_features(request, tiny_model, ServiceLimits())
    assert len(job.responses) == 2 and job.responses[0] and job.responses[1] == []
    assert (job.features.layer, job.features.encoding) == (4, pb.ENCODING_INT8)


def test_one_error_tree_rooted_at_service_error() -> None:
    assert issubclass(RequestError, ServiceError) and issubclass(ModelLoadError, ServiceError)
    assert central.ServiceError is ServiceError
    # "CentralError" is edge's name for "talking to central failed"; central does not reuse it
    assert not hasattr(central, "CentralError") and not hasattr(central, "UnsupportedError")


def test_features_sizes_are_refused_before_the_text_is_tokenised(tiny_model) -> None:
    from central._errors import LimitError

    huge = pb.FeaturesRequest(prompt=pb.Prompt(text="Hi"), responses=["word " * 30_000] * 4)
    started = time.perf_counter()
    with pytest.raises(LimitError) as raised:
        validate_features(huge, tiny_model, ServiceLimits(max_features_bytes=512 * 1024))
    assert raised.value.limit == "max_features_bytes" and "600000 bytes" in str(raised.value)
    assert time.perf_counter() - started < 0.5  # 600 KB of text was never tokenised
    # Within the bytes, the token count is kept as the responses are tokenised.
    many = pb.FeaturesRequest(prompt=pb.Prompt(text="Hi"), responses=["word " * 20] * 10)
    with pytest.raises(LimitError) as raised:
        validate_features(many, tiny_model, ServiceLimits(max_features_tokens=30))
    assert raised.value.limit == "max_features_tokens"
    assert issubclass(LimitError, ServiceError) and central.LimitError is LimitError
