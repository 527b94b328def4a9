from __future__ import annotations

import numpy as np
import pytest

from central._errors import RequestError
from central.features import encode, resolve_encoding, resolve_features, resolve_layer
from language_ranker.v1 import ranker_pb2 as pb

from .wire import decode


@pytest.fixture()
def vector() -> np.ndarray:
    return np.random.default_rng(0).normal(scale=3.0, size=576).astype(np.float32)


def test_fp16_is_two_bytes_per_value_and_round_trips(vector: np.ndarray) -> None:
    tensor = encode(vector, pb.ENCODING_FP16)
    assert len(tensor.data) == 2 * 576
    assert list(tensor.shape) == [576]
    np.testing.assert_allclose(decode(tensor), vector, rtol=1e-3, atol=1e-3)


def test_fp16_saturates_massive_activations_instead_of_overflowing_to_inf() -> None:
    # Gemma-3-270M has channels near 1e5 on some tokens: beyond fp16's 65504.
    values = np.array([1.5e5, -2.0e5, 3.0, 65504.0], dtype=np.float32)
    out = decode(encode(values, pb.ENCODING_FP16))
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, [65504.0, -65504.0, 3.0, 65504.0])


def test_fp32_is_exact(vector: np.ndarray) -> None:
    tensor = encode(vector, pb.ENCODING_FP32)
    assert len(tensor.data) == 4 * 576
    np.testing.assert_array_equal(decode(tensor), vector)


def test_int8_is_one_byte_per_value_within_half_a_step(vector: np.ndarray) -> None:
    tensor = encode(vector, pb.ENCODING_INT8)
    assert len(tensor.data) == 576 and len(tensor.scales) == 1
    step = np.abs(vector).max() / 127
    assert np.abs(decode(tensor) - vector).max() <= step / 2 + 1e-6


def test_int8_scales_each_row_of_a_matrix_separately() -> None:
    rows = np.array([[1.0, -2.0, 0.5], [100.0, 50.0, -25.0], [0.0, 0.0, 0.0]], np.float32)
    tensor = encode(rows, pb.ENCODING_INT8)
    assert len(tensor.scales) == 3
    np.testing.assert_allclose(decode(tensor), rows, atol=100 / 127 / 2 + 1e-6)
    np.testing.assert_allclose(decode(tensor)[0], rows[0], atol=2 / 127 / 2 + 1e-6)


def test_layer_fraction_default_is_sixty_percent_of_depth() -> None:
    assert resolve_layer(pb.FeatureSpec(), 30) == 18
    assert resolve_layer(pb.FeatureSpec(layer_fraction=1.0), 30) == 30
    assert resolve_layer(pb.FeatureSpec(layer_fraction=0.0), 30) == 0


def test_negative_layer_index_counts_from_the_top() -> None:
    assert resolve_layer(pb.FeatureSpec(layer_index=-1), 30) == 30
    assert resolve_layer(pb.FeatureSpec(layer_index=-31), 30) == 0


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (pb.FeatureSpec(layer_index=31), "features.layer_index"),
        (pb.FeatureSpec(layer_index=-32), "features.layer_index"),
        (pb.FeatureSpec(layer_fraction=1.5), "features.layer_fraction"),
        (pb.FeatureSpec(layer_fraction=float("nan")), "features.layer_fraction"),
    ],
)
def test_out_of_range_layers_name_the_field(spec: pb.FeatureSpec, field: str) -> None:
    with pytest.raises(RequestError) as raised:
        resolve_layer(spec, 30)
    assert raised.value.field == field


def test_unknown_encoding_is_rejected_and_unset_means_fp16() -> None:
    assert resolve_encoding(pb.ENCODING_UNSPECIFIED) == pb.ENCODING_FP16
    with pytest.raises(RequestError, match=r"features\.encoding: unknown encoding 9"):
        resolve_encoding(9)


def test_the_embedding_mean_adds_hidden_state_0_to_the_layers_the_passes_capture() -> None:
    vectors = [pb.FEATURE_VECTOR_LAST, pb.FEATURE_VECTOR_EMBEDDING_MEAN]
    asked = resolve_features(pb.FeatureSpec(layer_index=7, vectors=vectors), 30)
    assert (asked.last, asked.mean, asked.embedding_mean) == (True, False, True)
    assert asked.layers == (7, 0)
    alone = resolve_features(pb.FeatureSpec(vectors=[pb.FEATURE_VECTOR_EMBEDDING_MEAN]), 30)
    assert (alone.last, alone.embedding_mean, alone.layers) == (False, True, (18, 0))
    plain = resolve_features(pb.FeatureSpec(layer_index=7), 30)
    assert (plain.last, plain.embedding_mean, plain.layers) == (True, False, (7,))
