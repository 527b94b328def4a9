"""A response's vectors, from responses the caller already has.

The sampler captures a candidate's vectors in the passes that generate it;
this module computes the same vectors for given responses (the Features RPC,
the quality harness), with one batched pass over prompt + responses through
`forward.PrefilledPrompt`. Tests check that both agree with a plain forward
pass.

Per response and layer: the last token's state, the mean state over the
response's tokens and, when logits are computed, the mean entropy of the
next-token distributions the tokens were drawn from. An empty response
counts as its one end-of-sequence token (see `forward`), so all three are
defined for it and none is the prompt's. `ChunkPooling` also gives, on
request, the mean of hidden state 0 over the same tokens (the embedding
mean; `pool_responses` gives it as the `mean` of layer 0 when asked for it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .device import tensor_on, to_host
from .features import EMBEDDING_LAYER
from .forward import PrefilledPrompt, ResponseChunk, ResponsePass
from .model import LoadedModel

__all__ = [
    "ChunkPooling",
    "Pooled",
    "entropy",
    "pool_response_pass",
    "pool_response_passes",
    "pool_responses",
]


@dataclass(frozen=True)
class Pooled:
    """One response's vectors at each requested layer."""

    last: np.ndarray  # (layers, hidden) float32, hidden state of the last token
    mean: np.ndarray  # (layers, hidden) float32, mean hidden state over the response's tokens
    mean_entropy: float | None  # nats, temperature 1; None when logits were not computed
    # (hidden,) float32 mean of hidden state 0 over the response's tokens; None unless asked
    embedding_mean: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        """Bytes the vectors hold (what an outbox counts)."""
        extra = 0 if self.embedding_mean is None else self.embedding_mean.nbytes
        return self.last.nbytes + self.mean.nbytes + extra


def entropy(logp: torch.Tensor, probs: torch.Tensor | None = None) -> torch.Tensor:
    """Entropy in nats of each row of log-probabilities `logp` (..., vocab).

    `probs` is `logp.exp()` when the caller has it already (the sampler does).
    """
    probs = logp.exp() if probs is None else probs
    if logp.device.type == "cpu":  # on a GPU, asking whether any is NaN would wait for it
        values = -torch.linalg.vecdot(probs, logp)
        if not values.isnan().any():
            return values
    # A masked token: probability 0 times log-probability -inf.
    return -torch.linalg.vecdot(probs, logp.clamp(min=torch.finfo(logp.dtype).min))


def pool_responses(
    loaded: LoadedModel,
    prompt_ids: Sequence[int],
    responses: Sequence[Sequence[int]],
    layers: Sequence[int],
    *,
    mean_entropy: bool = False,
    batch_size: int = 8,
) -> tuple[np.ndarray, list[Pooled]]:
    """((layers, hidden) instruction feature, one `Pooled` per response, in order).

    `mean_entropy` runs the passes through the LM head (every position's
    logits); without it they stop at the deepest layer asked for.
    """
    prompt = PrefilledPrompt(loaded, prompt_ids, layers, logits=mean_entropy)
    instruction = to_host(torch.stack([prompt.hidden[layer] for layer in layers]))
    pooled: list[Pooled] = []
    for start in range(0, len(responses), batch_size):
        passes = prompt.feed(responses[start : start + batch_size], batch_size)
        pooled += pool_response_passes(list(passes), layers)
    return instruction, pooled


def pool_response_pass(passed: ResponsePass, layers: Sequence[int]) -> Pooled:
    """One response's vectors, from the pass that fed it."""
    return pool_response_passes([passed], layers)[0]


def pool_response_passes(passes: Sequence[ResponsePass], layers: Sequence[int]) -> list[Pooled]:
    """Each response's vectors, from the passes that fed them, copied to the host at once.

    Pooled on the model's device; one copy brings back every response's last
    and mean vectors at every layer (and mean entropy, where logits were computed).
    """
    if not passes:
        return []
    rows = []
    for passed in passes:
        states = [passed.hidden[layer] for layer in layers]  # each (fed tokens, hidden)
        last = torch.stack([s[-1] for s in states])
        mean = torch.stack([s.mean(dim=0) for s in states])
        values = [last.flatten(), mean.flatten()]
        if passed.logits is not None:
            values.append(entropy(torch.log_softmax(passed.logits, dim=-1)).mean()[None])
        rows.append(torch.cat(values))
    host = to_host(torch.stack(rows))  # (responses, 2 x layers x hidden [+ 1])
    shape = (len(layers), -1)
    width = host.shape[1] // 2 if passes[0].logits is None else (host.shape[1] - 1) // 2
    return [
        Pooled(
            last=row[:width].reshape(shape),
            mean=row[width : 2 * width].reshape(shape),
            mean_entropy=None if passed.logits is None else float(row[-1]),
        )
        for passed, row in zip(passes, host, strict=True)
    ]


class ChunkPooling:
    """The same vectors as `pool_response_pass`, gathered from a batch fed in chunks.

    What the engine uses for a Features call, so that a response of any
    length is fed a bounded slice at a time: per row, a running sum of the
    states and of the entropies, and the state of the last token once its
    slice comes by. With `embedding`, a running sum of hidden state 0 too
    (the chunks must carry it: fed with `EMBEDDING_LAYER` among the layers).
    The sums live on `device` (the model's); `pooled` copies them to the
    host once, for every row.
    """

    def __init__(
        self,
        rows: int,
        layer: int,
        width: int,
        entropy: bool,
        embedding: bool = False,
        device: torch.device | None = None,
    ) -> None:
        self.layer = layer
        on = torch.device("cpu") if device is None else device
        self._total = torch.zeros(rows, width, device=on)
        self._embedded = torch.zeros(rows, width, device=on) if embedding else None
        self._last = torch.zeros(rows, width, device=on)
        self._entropy = torch.zeros(rows, device=on) if entropy else None
        self._lengths = [1] * rows

    def add(self, chunk: ResponseChunk) -> None:
        hidden = chunk.hidden[self.layer]
        embedded = None if self._embedded is None else chunk.hidden[EMBEDDING_LAYER]
        self._lengths = chunk.lengths
        for row in range(hidden.shape[0]):
            n = chunk.real_columns(row)
            if n == 0:
                continue
            self._total[row] += hidden[row, :n].sum(dim=0)
            if self._embedded is not None and embedded is not None:
                self._embedded[row] += embedded[row, :n].sum(dim=0)
            if chunk.start + n == chunk.lengths[row]:  # the row's last token is in this slice
                self._last[row] = hidden[row, n - 1]
            if self._entropy is not None:
                drawn_from = torch.log_softmax(chunk.drawn_from(row), dim=-1)
                self._entropy[row] += entropy(drawn_from).sum()

    def pooled(self) -> list[Pooled]:
        """One `Pooled` (one layer) per row, once every chunk has been added."""
        width = self._total.shape[1]
        n = tensor_on(self._lengths, self._total.device, torch.float32)[:, None]
        parts = [self._last, self._total / n]
        if self._embedded is not None:
            parts.append(self._embedded / n)
        if self._entropy is not None:
            parts.append(self._entropy[:, None] / n)
        host = to_host(torch.cat(parts, dim=1))  # (rows, 2 or 3 x width [+ 1])
        return [
            Pooled(
                last=row[None, :width],
                mean=row[None, width : 2 * width],
                mean_entropy=None if self._entropy is None else float(row[-1]),
                embedding_mean=None if self._embedded is None else row[2 * width : 3 * width],
            )
            for row in host
        ]
