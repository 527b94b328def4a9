"""Per-token features for token-level heads (SWIFT): compute, encode, chunk.

What a SWIFT head reads is one vector per response token: hidden states at
a few layers, or (logits-only mode) a fixed-width summary of the output
distribution each token was drawn from. They are computed *after* sampling,
in one batched pass over the finished responses on top of the prompt's KV
cache (`forward.PrefilledPrompt`), rather than inside the sampler's decode
loop:

- the sampler stays exactly as fast for everyone who does not ask (no extra
  copies per step, no change to its early stop at the feature layer, which
  would have to move above the highest token layer);
- a batched pass over K x T known tokens is prefill-like work, far cheaper
  per token than the T sequential decode steps that produced them (measured
  in benchmarks/swift_bandwidth.py).

Causal attention means the right padding of a batch cannot change any real
position, so each token's vector is what a single-sequence pass would give
(up to float rounding). Responses exclude end-of-sequence, as in `Candidate`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from language_ranker.v1 import ranker_pb2 as pb

from ._errors import RequestError
from .device import tensor_on, to_host
from .features import encode, resolve_encoding
from .forward import PrefilledPrompt
from .model import LoadedModel

__all__ = [
    "TokenRequest",
    "compute_token_features",
    "compute_token_features_many",
    "default_token_layers",
    "resolve_token_spec",
    "token_chunks",
    "token_feature_passes",
]

DEFAULT_TOKEN_LAYERS = 4  # a request without layers gets the last four hidden states
DEFAULT_CHUNK_BYTES = 256 * 1024  # target payload of one TokenFeatures message
MAX_TOP_LOGPROBS = 64  # largest top-k accepted in logits-only mode


@dataclass(frozen=True)
class TokenRequest:
    """A validated TokenFeatureSpec."""

    layers: tuple[int, ...]  # hidden-state layers to concatenate; empty in logits mode
    top_logprobs: int  # logits mode when > 0: top-k log-probs per token
    encoding: int  # wire encoding (pb.ENCODING_*)

    @property
    def logits_mode(self) -> bool:
        return self.top_logprobs > 0

    def feature_size(self, hidden_size: int) -> int:
        """Values per token."""
        return 2 + self.top_logprobs if self.logits_mode else len(self.layers) * hidden_size

    def layout(self, hidden_size: int) -> pb.TokenFeatureLayout:
        return pb.TokenFeatureLayout(
            layers=list(self.layers),
            top_logprobs=self.top_logprobs,
            feature_size=self.feature_size(hidden_size),
        )


def default_token_layers(num_layers: int) -> list[int]:
    """The last few hidden states (later layers carry most of SWIFT's signal)."""
    count = min(DEFAULT_TOKEN_LAYERS, num_layers + 1)
    return list(range(num_layers + 1 - count, num_layers + 1))


def resolve_token_spec(spec: pb.TokenFeatureSpec, num_layers: int) -> TokenRequest | None:
    """The request's token features, or None when it did not enable them."""
    if not spec.enabled:
        return None
    encoding = resolve_encoding(spec.encoding)
    if spec.top_logprobs > MAX_TOP_LOGPROBS:
        raise RequestError(
            "token_features.top_logprobs", f"at most {MAX_TOP_LOGPROBS}, got {spec.top_logprobs}"
        )
    if spec.top_logprobs:
        return TokenRequest((), int(spec.top_logprobs), encoding)
    if spec.all_layers:
        return TokenRequest(tuple(range(num_layers + 1)), 0, encoding)
    layers = list(spec.layers) or default_token_layers(num_layers)
    for index in layers:
        if not -(num_layers + 1) <= index <= num_layers:
            raise RequestError(
                "token_features.layers",
                f"{index} is out of range for a model with {num_layers} layers",
            )
    return TokenRequest(tuple(i % (num_layers + 1) for i in layers), 0, encoding)


def compute_token_features(
    loaded: LoadedModel,
    prompt_ids: Sequence[int],
    responses: Sequence[Sequence[int]],
    request: TokenRequest,
    batch_size: int = 4,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yields ``(position in responses, (T, D) float32)`` for every response, in order.

    The prompt is prefilled once; each batch of responses runs on a copy of
    that cache, replicated to the batch.
    """
    for position, (values,) in compute_token_features_many(
        loaded, prompt_ids, responses, [request], batch_size
    ):
        yield position, values


def compute_token_features_many(
    loaded: LoadedModel,
    prompt_ids: Sequence[int],
    responses: Sequence[Sequence[int]],
    requests: Sequence[TokenRequest],
    batch_size: int = 4,
) -> Iterator[tuple[int, tuple[np.ndarray, ...]]]:
    """Several kinds of per-token features from the same forward passes.

    One pass yields both the hidden states and the logits, so asking for the
    hidden-state and the logits-only features together (as the quality
    harness does) costs one pass instead of two.
    """
    for finished in token_feature_passes(loaded, prompt_ids, responses, requests, batch_size):
        yield from finished


def token_feature_passes(
    loaded: LoadedModel,
    prompt_ids: Sequence[int],
    responses: Sequence[Sequence[int]],
    requests: Sequence[TokenRequest],
    batch_size: int = 4,
    pass_tokens: int | None = None,
) -> Iterator[list[tuple[int, tuple[np.ndarray, ...]]]]:
    """`compute_token_features_many` one forward pass at a time: after each pass, the
    responses it finished (often none). With `pass_tokens` no pass feeds more than
    about that many tokens (prompt pieces, and rows x columns of responses), so a
    caller can stop or do other work between passes whatever the lengths."""
    layers = sorted({layer for r in requests for layer in r.layers})
    logits = any(r.logits_mode for r in requests)
    prompt = PrefilledPrompt(loaded, prompt_ids, layers, logits=logits, prefill=False)
    while not prompt.ready:
        prompt.prefill(pass_tokens)
        yield []
    for first in range(0, len(responses), batch_size):
        batch = [list(r) for r in responses[first : first + batch_size]]
        columns = None if pass_tokens is None else max(1, pass_tokens // len(batch))
        pieces: list[list[list[torch.Tensor]]] = [[[] for _ in requests] for _ in batch]
        for chunk in prompt.chunks(batch, columns):
            for row, response in enumerate(batch):
                # An empty response has no token features (no row for its EOS).
                n = min(chunk.real_columns(row), max(0, len(response) - chunk.start))
                if n == 0:
                    continue
                tokens = tensor_on(response[chunk.start : chunk.start + n], loaded.device)
                for kind, request in enumerate(requests):
                    if request.logits_mode:
                        drawn_from = chunk.drawn_from(row)[:n]
                        piece = _logit_features(drawn_from, tokens, request.top_logprobs)
                    else:
                        piece = torch.cat([chunk.hidden[i][row, :n] for i in request.layers], -1)
                    pieces[row][kind].append(piece)
            if chunk.start + chunk.columns < max(chunk.lengths):  # more passes follow
                yield []
        finished = []
        for row in range(len(batch)):
            values = tuple(
                _joined(parts, request, loaded.hidden_size)
                for parts, request in zip(pieces[row], requests, strict=True)
            )
            finished.append((first + row, values))
        yield finished


def _joined(parts: list[torch.Tensor], request: TokenRequest, hidden_size: int) -> np.ndarray:
    """A response's (T, D) values from its slices; (0, D) for an empty response."""
    if not parts:
        return np.zeros((0, request.feature_size(hidden_size)), dtype=np.float32)
    return to_host(torch.cat(parts))


def _logit_features(logits: torch.Tensor, tokens: torch.Tensor, top: int) -> torch.Tensor:
    """Per position: [log p(token), entropy, top-k log-probs descending], (T, 2 + top)."""
    logp = torch.log_softmax(logits, dim=-1)
    chosen = logp.gather(1, tokens[:, None])
    entropy = -(logp.exp() * logp).sum(-1, keepdim=True)
    best = torch.topk(logp, top, dim=-1).values
    return torch.cat([chosen, entropy, best], dim=-1)


def token_chunks(
    index: int, values: np.ndarray, encoding: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[pb.TokenFeatures]:
    """One candidate's (T, D) features as TokenFeatures messages of about ``chunk_bytes``.

    At least one token per chunk, so a chunk exceeds the target only when a
    single token's vector does (all 31 layers of a 4096-wide model in fp32 is
    ~0.5 MB, still far below gRPC's limits).
    """
    tokens, width = values.shape
    per_token = width * _itemsize(encoding) + (4 if encoding == pb.ENCODING_INT8 else 0)
    rows = max(1, chunk_bytes // max(per_token, 1))
    if tokens == 0:
        yield pb.TokenFeatures(
            index=index, token_offset=0, features=encode(values, encoding), last_chunk=True
        )
        return
    for start in range(0, tokens, rows):
        yield pb.TokenFeatures(
            index=index,
            token_offset=start,
            features=encode(values[start : start + rows], encoding),
            last_chunk=start + rows >= tokens,
        )


# Bytes per value of each encoding (int8's per-vector scale is counted apart).
_ITEMSIZE: dict[int, int] = {pb.ENCODING_FP16: 2, pb.ENCODING_FP32: 4, pb.ENCODING_INT8: 1}


def _itemsize(encoding: int) -> int:
    return _ITEMSIZE[encoding]
