"""K candidates for one prompt, with features captured in the same passes.

The prompt is prefilled once and its KV cache copied to K rows; then one
batched decode step per token. Every step already computes the hidden state
of the token it feeds, so features cost nothing extra (the authors' code
runs a second forward pass instead):

- a response that ends with EOS: the token before EOS was fed in the step
  that produced EOS, so its hidden state is in hand;
- a response that hits ``max_new_tokens``: its last token has not been fed
  yet, so those rows take one final step that only collects hidden states
  (and stops at the feature layer: the layers above it and the LM head are
  skipped).

All rows share the prompt and advance together, so they always have the
same length: no padding, and "the last token" is the last position for
every row. Finished rows are dropped from the batch (and from the cache).

What makes a step cheap (see `decoding` for the measurements): linears on
oneDNN, a KV cache that appends in place, one hook on the feature layer
instead of all hidden states, the LM head on the last position only, and
one uniform draw per row instead of `torch.multinomial`'s one exponential
per vocabulary entry.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .decoding import new_cache, select_rows
from .forward import Forward, Pass
from .model import LoadedModel

__all__ = ["Cancelled", "SampledCandidate", "SamplingConfig", "sample", "sample_stream"]


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample; validated by the service before it gets here."""

    k: int = 1  # number of candidates
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0  # nucleus mass; 1.0 disables it
    top_k: int = 0  # keep the k most likely tokens; 0 disables it
    max_new_tokens: int = 128  # per candidate, end-of-sequence excluded
    seed: int | None = None  # None draws a fresh seed


@dataclass(frozen=True)
class SampledCandidate:
    """One finished response, as the sampler hands it to the service."""

    index: int  # 0..k-1, the row this response was sampled in
    token_ids: list[int]  # generated ids, EOS excluded
    finished_by_eos: bool  # False when max_new_tokens was reached
    cumulative_logprob: float  # sum of log p(token) at temperature 1
    feature: np.ndarray  # (hidden,) float32, hidden state of the last token


class Cancelled(Exception):
    """`should_stop` turned true; generation was abandoned mid-way."""


NO_FEATURE = np.empty(0, dtype=np.float32)  # the feature when features are off


def sample(
    loaded: LoadedModel,
    prompt_ids: list[int],
    config: SamplingConfig,
    layer: int,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    features: bool = True,
) -> Iterator[np.ndarray | SampledCandidate]:
    """Yields the instruction feature, then each candidate as it finishes.

    Raises `Cancelled` (between steps) as soon as `should_stop()` is true.
    With `features=False` nothing is captured and every feature is
    `NO_FEATURE` (an empty array): plain generation, for benchmarks and
    callers that only want text. `sample_stream` is the typed view of the same
    stream.
    """
    with torch.inference_mode():
        yield from _sample(loaded, prompt_ids, config, layer, should_stop, features)


def sample_stream(
    loaded: LoadedModel,
    prompt_ids: list[int],
    config: SamplingConfig,
    layer: int,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    features: bool = True,
) -> tuple[np.ndarray, Iterator[SampledCandidate]]:
    """`sample` split into its two parts: (instruction feature, candidates as they finish).

    The prompt is prefilled before this returns; the candidates are sampled
    as the iterator is consumed.
    """
    events = sample(loaded, prompt_ids, config, layer, should_stop=should_stop, features=features)
    instruction = next(events)
    assert isinstance(instruction, np.ndarray)
    return instruction, (c for c in events if isinstance(c, SampledCandidate))


def _sample(
    loaded: LoadedModel,
    prompt_ids: list[int],
    config: SamplingConfig,
    layer: int,
    should_stop: Callable[[], bool],
    features: bool,
) -> Iterator[np.ndarray | SampledCandidate]:
    generator = torch.Generator().manual_seed(
        config.seed if config.seed is not None else secrets.randbits(63)
    )
    forward = Forward(loaded, [layer] if features else [])
    cache = new_cache(loaded.model)
    prefill = forward(torch.tensor([prompt_ids]), cache)
    instruction = _last(prefill, layer)[0].copy() if features else NO_FEATURE
    yield instruction

    k = config.k
    select_rows(cache, [0] * k)  # share the prefill across rows
    assert prefill.logits is not None
    logits = prefill.logits.expand(k, -1)
    rows = list(range(k))  # candidate index of each batch row
    tokens: list[list[int]] = [[] for _ in range(k)]
    logprobs = [0.0] * k
    # Hidden state of the last fed token per row; before any response token
    # that is the prompt's last token (an empty response's feature).
    last_hidden = np.broadcast_to(instruction, (k, instruction.shape[0]))
    eos = loaded.eos_token_ids

    while rows:
        if should_stop():
            raise Cancelled
        next_ids, step_logprobs = _pick(logits, config, generator)
        picked = next_ids.tolist()
        keep: list[int] = []
        for b, row in enumerate(rows):
            logprobs[row] += step_logprobs[b]
            if picked[b] in eos:
                yield _finished(row, tokens[row], True, logprobs[row], last_hidden[b])
            else:
                tokens[row].append(picked[b])
                keep.append(b)
        if not keep:
            return
        if len(keep) < len(rows):
            select_rows(cache, keep)
            next_ids = next_ids[torch.tensor(keep)]
        rows = [rows[b] for b in keep]
        if len(tokens[rows[0]]) >= config.max_new_tokens:  # all rows have the same length
            if features:  # the last tokens are not fed yet: one pass up to the feature layer
                last_hidden = _last(forward(next_ids[:, None], cache, logits="none"), layer)
            for b, row in enumerate(rows):
                yield _finished(row, tokens[row], False, logprobs[row], last_hidden[b])
            return
        step = forward(next_ids[:, None], cache)
        if features:
            last_hidden = _last(step, layer)
        assert step.logits is not None
        logits = step.logits


def _last(step: Pass, layer: int) -> np.ndarray:
    """(batch, hidden) state of each row's newest token at `layer`."""
    return step.hidden[layer][:, -1].numpy()


def _finished(
    row: int, token_ids: list[int], by_eos: bool, logprob: float, hidden: np.ndarray
) -> SampledCandidate:
    return SampledCandidate(
        index=row,
        token_ids=list(token_ids),
        finished_by_eos=by_eos,
        cumulative_logprob=logprob,
        feature=np.array(hidden, dtype=np.float32),
    )


def _pick(
    logits: torch.Tensor, config: SamplingConfig, generator: torch.Generator
) -> tuple[torch.Tensor, list[float]]:
    """Next token per row and its log-probability at temperature 1."""
    logp = torch.log_softmax(logits, dim=-1)
    next_ids = _pick_tokens(logits, config, generator, logp)
    return next_ids, logp.gather(1, next_ids[:, None])[:, 0].tolist()


def _pick_tokens(
    logits: torch.Tensor,
    config: SamplingConfig,
    generator: torch.Generator,
    logp: torch.Tensor | None = None,
) -> torch.Tensor:
    """Next token per row: greedy at temperature 0, else temperature/top-k/top-p sampling."""
    if config.temperature == 0.0:
        return logits.argmax(dim=-1)
    vocab = logits.shape[-1]
    unfiltered = config.top_p >= 1.0 and not 0 < config.top_k < vocab
    if logp is not None and config.temperature == 1.0 and unfiltered:
        return _draw(logp.exp(), generator)  # the model's own distribution: reuse logp
    scores = logits / config.temperature
    if 0 < config.top_k < vocab:
        kth = torch.topk(scores, config.top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        sorted_probs = torch.softmax(sorted_scores, dim=-1)
        # Drop a token once the mass before it already reaches top_p; the most
        # likely token always stays.
        drop_sorted = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= config.top_p
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    return _draw(torch.softmax(scores, dim=-1), generator)


def _draw(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row, drawn with probability `probs` by inverting the CDF.

    One uniform number per row, where `torch.multinomial` draws one
    exponential per vocabulary entry (~11-20 ms a step at K=16 and a 49k
    vocabulary, 10-15% of a step). The CDF is inverted in two levels, over
    blocks of `_BLOCK` tokens and then inside the chosen block, so no
    vocabulary-sized cumulative sum is written (that alone took ~5 ms a
    step); sums are float64 so tail tokens keep their own mass. Each search
    uses `right=True` with the target kept strictly below the total, so it
    never lands on a zero-probability token (its CDF equals its
    predecessor's) or on padding.
    """
    rows, vocab = probs.shape
    blocks = torch.nn.functional.pad(probs, (0, (-vocab) % _BLOCK)).view(rows, -1, _BLOCK)
    block_cdf = blocks.sum(dim=-1, dtype=torch.float64).cumsum(dim=-1)  # (rows, blocks)
    u = torch.rand((rows, 1), dtype=torch.float64, generator=generator)
    target = _below(u * block_cdf[:, -1:], block_cdf[:, -1:])
    block = torch.searchsorted(block_cdf, target, right=True)  # (rows, 1)
    before = torch.where(block > 0, block_cdf.gather(1, (block - 1).clamp(min=0)), 0.0)
    inner_cdf = blocks[torch.arange(rows), block[:, 0]].double().cumsum(dim=-1)
    inner = torch.searchsorted(inner_cdf, _below(target - before, inner_cdf[:, -1:]), right=True)
    return (block * _BLOCK + inner)[:, 0]


_BLOCK = 256  # tokens per block in `_draw`


def _below(value: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """`value` clamped into [0, total): a float rounding can reach the total itself."""
    return torch.minimum(value, total * (1.0 - 2.0**-40)).clamp_(min=0.0)
