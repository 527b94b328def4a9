"""Which hidden states become a candidate's features, and how they go on the wire.

Layers are numbered as Hugging Face's ``output_hidden_states`` returns them:
0 is the embedding output, ``num_layers`` the last block's output after the
final norm. Language Ranker's default, 0.6 of depth, comes from its Table 5.
At that layer a candidate carries the last token's state (the paper's
feature, and the v1 wire's only one) and, when asked, the mean over the
response's tokens and the mean next-token entropy (representation v2). It
can also carry, whatever the layer, the mean of hidden state 0 over the same
tokens (`EMBEDDING_LAYER`): the input embeddings, which say which words the
answer uses before any layer mixes them with the prompt (the content study,
docs/results/content-tastes.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from language_ranker.v1 import ranker_pb2 as pb

from ._errors import RequestError

__all__ = [
    "DEFAULT_LAYER_FRACTION",
    "EMBEDDING_LAYER",
    "SUPPORTED_ENCODINGS",
    "SUPPORTED_VECTORS",
    "FeatureRequest",
    "encode",
    "resolve_encoding",
    "resolve_features",
    "resolve_layer",
    "to_float16",
]

DEFAULT_LAYER_FRACTION = 0.6

# The hidden state FEATURE_VECTOR_EMBEDDING_MEAN averages: output_hidden_states[0],
# the input of the first decoder layer (the token embeddings, scaled as the model
# scales them: Gemma multiplies by sqrt(hidden size)).
EMBEDDING_LAYER = 0

# Encodings this server can produce, in the order Info reports them.
SUPPORTED_ENCODINGS: tuple[pb.Encoding, ...] = (
    pb.ENCODING_FP16,
    pb.ENCODING_FP32,
    pb.ENCODING_INT8,
)

_INT8_MAX = 127


# The vectors a candidate can carry (FeatureSpec.vectors), in the order Info reports them.
SUPPORTED_VECTORS: tuple[pb.FeatureVector, ...] = (
    pb.FEATURE_VECTOR_LAST,
    pb.FEATURE_VECTOR_MEAN,
    pb.FEATURE_VECTOR_EMBEDDING_MEAN,
)


@dataclass(frozen=True)
class FeatureRequest:
    """A validated FeatureSpec: what to capture and how to send it."""

    layer: int  # hidden-state index in [0, num_layers]
    encoding: int  # wire encoding (pb.ENCODING_*), never UNSPECIFIED
    last: bool = True  # send the last token's state (Candidate.feature)
    mean: bool = False  # send the mean over the response's tokens (Candidate.mean_feature)
    mean_entropy: bool = False  # send the mean next-token entropy (Candidate.mean_entropy)
    # send the mean of hidden state 0 over the response's tokens
    # (Candidate.embedding_mean_feature)
    embedding_mean: bool = False

    @property
    def layers(self) -> tuple[int, ...]:
        """The hidden states the passes must capture: the feature layer, and hidden
        state 0 when the embedding mean is asked for."""
        return (self.layer, EMBEDDING_LAYER) if self.embedding_mean else (self.layer,)


def resolve_features(spec: pb.FeatureSpec, num_layers: int) -> FeatureRequest:
    """What `spec` asks for, checked against the model's depth.

    No `vectors` means the last token's state alone: the v1 request.
    """
    layer = resolve_layer(spec, num_layers)
    encoding = resolve_encoding(spec.encoding)
    vectors = set(spec.vectors) or {pb.FEATURE_VECTOR_LAST}
    unknown = sorted(vectors - set(SUPPORTED_VECTORS))
    if unknown:
        raise RequestError("features.vectors", f"unknown vector {unknown[0]}")
    return FeatureRequest(
        layer=layer,
        encoding=encoding,
        last=pb.FEATURE_VECTOR_LAST in vectors,
        mean=pb.FEATURE_VECTOR_MEAN in vectors,
        mean_entropy=spec.mean_entropy,
        embedding_mean=pb.FEATURE_VECTOR_EMBEDDING_MEAN in vectors,
    )


def resolve_layer(spec: pb.FeatureSpec, num_layers: int) -> int:
    """The hidden-state index in [0, num_layers] that `spec` asks for."""
    which = spec.WhichOneof("layer")
    if which == "layer_index":
        index = spec.layer_index
        if not -(num_layers + 1) <= index <= num_layers:
            raise RequestError(
                "features.layer_index",
                f"{index} is out of range for a model with {num_layers} layers "
                f"(use 0..{num_layers}, or -{num_layers + 1}..-1 from the top)",
            )
        return index % (num_layers + 1)
    fraction = spec.layer_fraction if which == "layer_fraction" else DEFAULT_LAYER_FRACTION
    if not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
        raise RequestError("features.layer_fraction", f"must be in [0, 1], got {fraction}")
    return round(fraction * num_layers)


def resolve_encoding(encoding: int) -> int:
    """The concrete encoding for a request's `encoding` field (unset means fp16)."""
    if encoding == pb.ENCODING_UNSPECIFIED:
        return pb.ENCODING_FP16
    if encoding not in SUPPORTED_ENCODINGS:
        raise RequestError("features.encoding", f"unknown encoding {encoding}")
    return encoding


_FP16_MAX = float(np.finfo(np.float16).max)  # 65504


def to_float16(values: np.ndarray) -> np.ndarray:
    """fp16 that saturates at +-65504 instead of overflowing to inf.

    Some models keep a few "massive activation" channels far outside the
    fp16 range (Gemma-3-270M reaches ~1e5 on some tokens). A plain cast turns
    them into inf, which no ranker can use and the SDK rightly refuses; a
    saturated value keeps its sign and stays the largest in its vector.
    """
    return np.clip(np.asarray(values, dtype=np.float32), -_FP16_MAX, _FP16_MAX).astype("<f2")


def encode(values: np.ndarray, encoding: int) -> pb.Tensor:
    """Packs a float array into a wire Tensor (raw little-endian bytes).

    int8 is symmetric per vector along the last axis: ``q = round(x / s)``
    with ``s = max|x| / 127``, so each vector keeps its own dynamic range.
    """
    values = np.asarray(values, dtype=np.float32)
    shape = list(values.shape)
    if encoding == pb.ENCODING_FP16:
        return pb.Tensor(dtype=pb.DTYPE_FLOAT16, shape=shape, data=to_float16(values).tobytes())
    if encoding == pb.ENCODING_FP32:
        return pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=shape, data=values.astype("<f4").tobytes())
    if encoding == pb.ENCODING_INT8:
        rows = values.reshape(-1, shape[-1] if shape else 1)
        scales = np.abs(rows).max(axis=1) / _INT8_MAX
        scales = np.where(scales > 0, scales, 1.0).astype(np.float32)
        quantised = np.clip(np.rint(rows / scales[:, None]), -_INT8_MAX, _INT8_MAX).astype(np.int8)
        return pb.Tensor(
            dtype=pb.DTYPE_INT8, shape=shape, data=quantised.tobytes(), scales=scales.tolist()
        )
    raise ValueError(f"unknown encoding {encoding}")
